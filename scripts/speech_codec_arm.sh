#!/usr/bin/env bash
# One arm of a lever experiment on the wide speech codec: INIT's weights continued for
# EXTRA steps (default 3000) with the wide recipe (scripts/speech_codec_wide.sh) plus
# the flags given, into runs/codec/arms/NAME. The arms of one experiment start from the
# same INIT at the step it records, with fresh optimizer moments, on the same learning
# rate schedule and clip stream: they differ only in their flags. Background, one
# thread each, resumable (re-run the same command). The measured experiments
# (docs/codec.md), each a pair:
#   bit rate: INIT=<the wide run's 8-codebook weights at 55,250 steps>,
#     NAME=cb8 ... --n_codebooks 8   vs   NAME=cb12 ... (the recipe's 12)
#   quantizer dropout: INIT=<the wide run's weights at 62,000 steps>,
#     NAME=qd05 ... (the recipe's 0.5)   vs   NAME=qd0 ... --quantizer_dropout 0
# e.g.  INIT=runs/codec/speech_wide/weights.pth NAME=qd0 \
#         nohup scripts/speech_codec_arm.sh --quantizer_dropout 0 > logs/qd0.log 2>&1 &
# Score a pair on the same 64 held-out clips:
#   python -m codec_training.ship --quality runs/codec/arms/qd0/weights.pth \
#       --against runs/codec/arms/qd05/weights.pth --n 64
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${INIT:?set INIT to wide-codec weights}
NAME=${NAME:?set NAME, the arm folder under runs/codec/arms}
START=$(.venv/bin/python -c "from codec_training import train; print(train.recorded_step('$INIT'))")
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec .venv/bin/python -m codec_training.train \
  --out "runs/codec/arms/$NAME" --threads 1 --data speech --speech_root data/speech \
  --holdout_voices ru_f --init "$INIT" --continue_init true --n_codebooks 12 \
  --encoder_dim 16 --decoder_dim 256 --steps $((START + ${EXTRA:-3000})) \
  --lr 0.0008 --lr_decay 0.99997 --gan_start 1000000 --lambda_sisdr 1.0 \
  --eval_every 1000 --checkpoint_every 250 "$@"
