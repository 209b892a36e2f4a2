#!/usr/bin/env bash
# The bit-rate lever for the wide speech codec's SI-SDR: the same weights continued
# for the same steps with 8 codebooks (4 kbit/s, the control) and with 12 (6 kbit/s,
# DAC's 16 kHz setting; the 4 added codebooks start fresh, the 8 trained ones are kept:
# `--init` grows the quantizer). One change between the arms; both start from INIT at
# the step it records with fresh optimizer moments, on the same learning-rate schedule
# and clip stream. Background, one thread each, resumable (re-run the same command):
#   INIT=... CODEBOOKS=12 nohup scripts/speech_codec_codebooks.sh > logs/codebooks12.log 2>&1 &
#   INIT=... CODEBOOKS=8  nohup scripts/speech_codec_codebooks.sh > logs/codebooks8.log 2>&1 &
# Score the pair on the same 64 held-out clips:
#   python -m codec_training.ship --quality runs/codec/bitrate/cb12/weights.pth \
#       --against runs/codec/bitrate/cb8/weights.pth --n 64
# INIT: 8-codebook wide-codec weights (the measured run: the wide run's 55,250-step
# weights.pth; the shipped file has 12 codebooks since); EXTRA: steps to train.
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${INIT:?set INIT to 8-codebook wide-codec weights}
CODEBOOKS=${CODEBOOKS:?set CODEBOOKS=8 or 12}
OUT=runs/codec/bitrate/cb$CODEBOOKS
START=$(.venv/bin/python -c "from codec_training import train; print(train.recorded_step('$INIT'))")
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec .venv/bin/python -m codec_training.train \
  --out "$OUT" --threads 1 --data speech --speech_root data/speech \
  --holdout_voices ru_f --init "$INIT" --continue_init true --n_codebooks "$CODEBOOKS" \
  --encoder_dim 16 --decoder_dim 256 --steps $((START + ${EXTRA:-3000})) \
  --lr 0.0008 --lr_decay 0.99997 --gan_start 1000000 --lambda_sisdr 1.0 \
  --eval_every 1000 --checkpoint_every 250
