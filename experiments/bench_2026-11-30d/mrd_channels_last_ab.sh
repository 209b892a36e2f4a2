for t in /work/main /tmp/wt_cl /work/main /tmp/wt_cl; do
  cd $t && PYTHONPATH=$t /work/main/.venv/bin/python -m bench.bench_disc --widths 1 --periods --halves --repeats 3 --name disc_mrd_cl_check 2>/dev/null | grep -A12 "^## disc_mrd_cl_check" | sed "s|^|$t |"
done
