#!/bin/sh
# Allocator x config matrix, ours alone, one process per cell, cells alternated so
# drift hits every setting alike.  Appends to alloc_matrix.jsonl.
#   nohup sh experiments/bench_2026-11-30d/run_matrix.sh ROUNDS > /tmp/matrix.log 2>&1 &
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/bench_2026-11-30d/alloc_matrix.jsonl
for r in $(seq "${1:-1}"); do
  for cfg in original demo; do
    for alloc in default tuned mmap arena; do
      $PY experiments/bench_2026-11-30d/step_alloc.py --alloc $alloc --config $cfg --repeats 5 | tail -1 >> $OUT
    done
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $PY experiments/bench_2026-11-30d/step_alloc.py --alloc default --config $cfg --repeats 5 | tail -1 >> $OUT
  done
done
