#!/usr/bin/env bash
# The speech codec's SI-SDR stage (docs/codec.md "The speech codec"): the first stage's
# weights fine-tuned with the SI-SDR term at 5x (mel-dominated training plateaued at
# ~6 dB). Background, one thread, resumable: re-running resumes from
# runs/codec/speech_sisdr/train_state.pt; without it, it starts from INIT (default: the
# shipped speech codec).
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${INIT:-codec_bridge/weights/speech/speech_codec_16khz.pth}
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec .venv/bin/python -m codec_training.train \
  --out runs/codec/speech_sisdr --threads 1 --data speech --speech_root data/speech \
  --holdout_voices ru_f --init "$INIT" \
  --steps 12000 --lr 0.0002 --lr_decay 0.99993 --gan_start 1000000 --lambda_sisdr 5.0 \
  --eval_every 1000 --checkpoint_every 250
