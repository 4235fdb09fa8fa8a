#!/usr/bin/env bash
# The tree before this session (s0 = 50669ce) and this session's (s2 = c15d355), in turns, twice.
cd /tmp/qd
export HF_HUB_OFFLINE=1 MLFLOW_TRACKING_URI=sqlite:////tmp/qb/mlflow.db
S=/work/main/.venv/bin/splitserve
T="--source-uri models:/all-MiniLM-L6-v2/1 --targets pyfunc-in-process gateway-onnx-fp32 gateway-onnx-fp32-inline --concurrency 1 16 --batch-sizes 1 8 --seconds 2 --repeats 3"
uptime > started
for r in 1 2; do
  PYTHONPATH=/tmp/s0 $S bench --out before$r $T > before$r.out 2> before$r.err
  echo "before$r rc=$?" >> started
  PYTHONPATH=/tmp/s2 $S bench --out after$r $T > after$r.out 2> after$r.err
  echo "after$r rc=$?" >> started
done
uptime >> started
