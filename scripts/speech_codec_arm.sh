#!/usr/bin/env bash
# One arm of a lever experiment on the wide speech codec: INIT's weights continued for
# EXTRA steps (default 3000) with the wide recipe (scripts/speech_codec_wide.sh) and the
# flags given, into runs/codec/arms/NAME. The arms of one experiment start from the same
# INIT at the step it records, with fresh optimizer moments, on the same schedule and
# clip stream: they differ only in their flags. Background, one thread each, resumable
# (re-run the same command). The measured experiments (docs/codec.md) ran with the
# recipe of their day, which their commands name:
#   bit rate, from the 8-codebook weights at 55,250 steps:
#     NAME=cb8 ... --n_codebooks 8 --quantizer_dropout 0.5 --lr_decay 0.99997 --lambda_sisdr 1
#     NAME=cb12 ...             --quantizer_dropout 0.5 --lr_decay 0.99997 --lambda_sisdr 1
#   quantizer dropout, from the weights at 62,000 steps:
#     NAME=qd05 ... --quantizer_dropout 0.5 --lr_decay 0.99997 --lambda_sisdr 1
#     NAME=qd0 ...  --quantizer_dropout 0   --lr_decay 0.99997 --lambda_sisdr 1
# e.g.  INIT=runs/codec/speech_wide/weights.pth NAME=qd0 nohup scripts/speech_codec_arm.sh \
#         --quantizer_dropout 0 --lr_decay 0.99997 > logs/qd0.log 2>&1 &
# Score a pair on the same 64 held-out clips:
#   python -m codec_training.ship --quality runs/codec/arms/qd0/weights.pth \
#       --against runs/codec/arms/qd05/weights.pth --n 64
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${INIT:?set INIT to wide-codec weights}
NAME=${NAME:?set NAME, the arm folder under runs/codec/arms}
[ -f "$INIT" ] || { echo "INIT=$INIT: no such weights file" >&2; exit 1; }
START=$(.venv/bin/python -c "from codec_training import train; print(train.recorded_step('$INIT'))")
INIT="$INIT" OUT="runs/codec/arms/$NAME" STEPS=$((START + ${EXTRA:-3000})) \
  exec scripts/speech_codec_wide.sh "$@"
