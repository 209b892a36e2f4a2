#!/bin/sh
# Issue 18 pilot 2: the STFT term with its log floor raised from 1e-5 to 0.05 (power),
# ~40-55 dB below a clip's peak cell, so the loss weighs the cells STOI sees.
set -e
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
COMMON="--threads 2 --init codec_bridge/weights/demo_codec_16khz.pth --steps 1500 --lr 3e-4 \
  --warmup 100 --lr_decay 0.999 --gan_start 100000 --lambda_sisdr 1.0 --eval_every 500"
$PY -m codec_bridge.train_codec --out runs/codec/pilot_stft_clamp $COMMON --lambda_stft 5.0 --stft_clamp 0.05
$PY scripts/stoi_ceiling.py --codec runs/codec/pilot_stft_clamp/weights.pth --n 32 --levels 15 \
  --out experiments/codec_2026-11-30_stft/pilot_stft_clamp.json
