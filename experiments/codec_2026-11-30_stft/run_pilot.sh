#!/bin/sh
# Issue 18 pilot: does DAC's log-magnitude multi-scale STFT term raise STOI?
# A/B fine-tunes of the shipped codec, 1500 steps each, identical but for --lambda_stft.
set -e
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
COMMON="--threads 2 --init codec_bridge/weights/demo_codec_16khz.pth --steps 1500 --lr 3e-4 \
  --warmup 100 --lr_decay 0.999 --gan_start 100000 --lambda_sisdr 1.0 --eval_every 500"
for arm in control stft; do
  extra=""; [ $arm = stft ] && extra="--lambda_stft 5.0"
  $PY -m codec_bridge.train_codec --out runs/codec/pilot_$arm $COMMON $extra
  $PY scripts/stoi_ceiling.py --codec runs/codec/pilot_$arm/weights.pth --n 32 --levels 15 \
    --out experiments/codec_2026-11-30_stft/pilot_$arm.json
done
