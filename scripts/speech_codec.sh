#!/usr/bin/env bash
# The speech codec's training run (docs/codec.md "The speech codec"): background, one
# thread, resumable. Re-running resumes from runs/codec/speech/train_state.pt; on a
# machine without it, it starts from the shipped weights (--init).
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=codec_bridge/weights/speech/speech_codec_16khz.pth
[ -f runs/codec/speech/train_state.pt ] && INIT=codec_bridge/weights/demo_codec_16khz.pth
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec .venv/bin/python -m codec_training.train \
  --out runs/codec/speech --threads 1 --data speech --speech_root data/speech \
  --holdout_voices ru_f --init "$INIT" \
  --steps 40000 --lr 0.0005 --lr_decay 0.99993 --gan_start 1000000 --lambda_sisdr 1.0 \
  --eval_every 1000 --checkpoint_every 250
