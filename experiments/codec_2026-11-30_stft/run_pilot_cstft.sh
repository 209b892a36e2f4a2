#!/bin/sh
# Issue 18 pilot 4: an L1 term on the complex STFT (windows 2048/512; magnitude and
# phase), the one lever of the issue's list not tried before; same A/B fine-tune as
# run_pilot.sh's control.
set -e
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
COMMON="--threads 2 --init codec_bridge/weights/demo_codec_16khz.pth --steps 1500 --lr 3e-4 \
  --warmup 100 --lr_decay 0.999 --gan_start 100000 --lambda_sisdr 1.0 --eval_every 500"
$PY -m codec_bridge.train_codec --out runs/codec/pilot_cstft $COMMON --lambda_cstft 10.0
$PY scripts/stoi_ceiling.py --codec runs/codec/pilot_cstft/weights.pth --n 32 --levels 15 \
  --out experiments/codec_2026-11-30_stft/pilot_cstft.json
