#!/usr/bin/env bash
# Two source trees' `splitserve bench`, in turns (before, after, before, after, ...), so that a busy
# machine weighs on both alike: pyfunc, three tiers and inline at 1 and 16 x 1 and 8 records.
#   bash benchmarks/turns.sh OUT_DIR BEFORE_TREE AFTER_TREE [ROUNDS]
# A tree is a source folder (e.g. `git archive REV | tar -x -C DIR`), put first on PYTHONPATH.
# Writes OUT_DIR/{before,after}N/ (the bench's results) and OUT_DIR/started (exit codes, load).
set -u
OUT=$1 BEFORE=$2 AFTER=$3 ROUNDS=${4:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT" && cd "$OUT"
export HF_HUB_OFFLINE=1
T="--source-uri models:/all-MiniLM-L6-v2/1 --targets pyfunc-in-process gateway-onnx-fp32 gateway-onnx-fp32-inline --concurrency 1 16 --batch-sizes 1 8 --seconds 2 --repeats 3"
uptime > started
for r in $(seq 1 "$ROUNDS"); do
  for side in before after; do
    tree=$BEFORE; [ "$side" = after ] && tree=$AFTER
    PYTHONPATH=$tree "$HERE/.venv/bin/splitserve" bench --out "$side$r" $T > "$side$r.out" 2> "$side$r.err"
    echo "$side$r rc=$?" >> started
  done
done
uptime >> started
