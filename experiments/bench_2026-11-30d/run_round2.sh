#!/bin/sh
# Round 2: mmap-only set late (after jax/torch/step built) vs early vs default;
# then 1 vs 2 forced CPU devices (codec backend jax), default and mmap-only malloc.
#   nohup sh experiments/bench_2026-11-30d/run_round2.sh > /tmp/round2.log 2>&1 &
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
D=experiments/bench_2026-11-30d
while pgrep -f run_matrix.sh > /dev/null; do sleep 10; done
$PY $D/step_alloc.py --alloc mmap --config original --late | tail -1 >> $D/alloc_matrix.jsonl
$PY $D/step_alloc.py --alloc default --config original | tail -1 >> $D/alloc_matrix.jsonl
$PY $D/step_alloc.py --alloc mmap --config original | tail -1 >> $D/alloc_matrix.jsonl
for alloc in default mmap; do
  for dev in 1 2; do
    $PY $D/step_devices.py --devices $dev --alloc $alloc | tail -1 >> $D/devices.jsonl
  done
done
