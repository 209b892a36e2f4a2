#!/usr/bin/env bash
# A wider speech codec (encoder 16, decoder 256 channels; the narrow one is 8 and 128),
# the lever docs/codec.md measured. At 8 codebooks it plateaued near 8.3 dB from 54,250
# steps; since 55,250 it trains with 12 (6 kbit/s, DAC's 16 kHz setting), and since
# 62,000 without quantizer dropout (the demo decodes with every codebook), since 68,750
# at a quarter of the rate and since 72,000 with the SI-SDR term x5; since 80,000 with
# 16 codebooks (8 kbit/s; the 4 added at their own rate, --added_codebook_lr 0.001, in a
# warm-restarted cycle: --lr 0.00005 --lr_decay 0.9995 --lr_restart 80000, flags to pass
# to continue that cycle: the defaults below are the run's schedule before it); the measured
# comparisons: scripts/speech_codec_arm.sh and docs/research-log.md. Background, one
# thread, resumable: re-running resumes from runs/codec/speech_wide/train_state.pt; on
# a machine without it, it continues from the shipped wide weights when they exist
# (--init, at the step they record), else starts from scratch. STEPS=N stops it at step
# N; OUT=DIR trains a copy of the run there (INIT=FILE: a new run from those weights;
# a file with a narrower encoder or decoder is widened to the sizes asked,
# codec_training/widen.py, one with fewer codebooks grown); flags after the script's
# name change the recipe (a resume may change the schedule, --lr_restart included, and
# the loss weights). Ship at the end of a session (float16
# keeps the file at 5 MB):
#   python -m codec_training.ship --src runs/codec/speech_wide --half \
#       --out codec_bridge/weights/speech_wide --name speech_codec_wide_16khz.pth --n 64
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/codec/speech_wide}
# Where a run without a state starts: INIT=FILE, else the shipped weights when they exist.
FROM=${INIT:-codec_bridge/weights/speech_wide/speech_codec_wide_16khz.pth}
START=()
if [ ! -f "$OUT/train_state.pt" ] && [ -f "$FROM" ]; then START=(--init "$FROM" --continue_init true); fi
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec .venv/bin/python -m codec_training.train \
  --out "$OUT" --threads 1 --data speech --speech_root data/speech \
  --holdout_voices ru_f "${START[@]}" --encoder_dim 16 --decoder_dim 256 \
  --n_codebooks 16 --quantizer_dropout 0 \
  --steps "${STEPS:-84000}" --lr 0.0008 --lr_decay 0.99995 --gan_start 1000000 --lambda_sisdr 5.0 \
  --eval_every 1000 --checkpoint_every 250 "$@"
