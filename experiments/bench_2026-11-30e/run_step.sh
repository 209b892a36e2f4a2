#!/bin/sh
# The demo step's parts (bench_step --presets demo --waveform), repeated runs, each its own process.
#   nohup sh experiments/bench_2026-11-30e/run_step.sh 2 3 > /tmp/step.log 2>&1 &
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
D=experiments/bench_2026-11-30e
for run in "$@"; do
  $PY -m bench.bench_step --presets demo --waveform --repeats 5
  cp bench/results/step.json $D/step_demo_waveform_$run.json
done
