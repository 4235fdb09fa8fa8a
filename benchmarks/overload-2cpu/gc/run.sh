#!/usr/bin/env bash
# GC pauses at 10x overload: the tree before (50669ce) and ac8b799, in turns, twice; the same generator (ac8b799's overload.py).
cd /tmp/gca
export HF_HUB_OFFLINE=1 MLFLOW_TRACKING_URI=sqlite:////tmp/qb/mlflow.db
PY=/work/main/.venv/bin/python
B=models:/m-3766020b47bc4d9db69d50c5a52d6014
for r in 1 2; do
  for t in before:/tmp/s0 after:/tmp/s3; do
    name=${t%%:*}$r; tree=${t#*:}
    mkdir -p $name
    GC_PAUSES_DIR=/tmp/gca/$name PYTHONPATH=$tree:/tmp/s3/benchmarks/gc_pauses $PY /tmp/s3/benchmarks/overload.py --bundle $B --repeats 3 --json $name.json > $name.out 2> $name.err
    echo "$name rc=$?" >> started
  done
done
