#!/bin/sh
# Issue 18 pilot 3: DAC's GAN (its MRD only: FFT 512/256/128; no MPD, 3.3x the step
# time) on from the first step of the same A/B fine-tune as run_pilot.sh's control.
set -e
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
COMMON="--threads 2 --init codec_bridge/weights/demo_codec_16khz.pth --steps 1500 --lr 3e-4 \
  --warmup 100 --lr_decay 0.999 --lambda_sisdr 1.0 --eval_every 500"
$PY -m codec_bridge.train_codec --out runs/codec/pilot_gan_mrd $COMMON --gan_start 0 --periods
$PY scripts/stoi_ceiling.py --codec runs/codec/pilot_gan_mrd/weights.pth --n 32 --levels 15 \
  --out experiments/codec_2026-11-30_stft/pilot_gan_mrd.json
