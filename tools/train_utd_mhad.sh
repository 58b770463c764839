#!/usr/bin/env bash
# Reproduce the UTD-MHAD results and the shipped model on a GPU machine: convert both layouts,
# train the native-3D benchmark and the 2D openpose model side by side, evaluate both.
#   tools/train_utd_mhad.sh [UTD_DIR] [OUT_DIR]
set -euo pipefail
UTD=${1:-../shared/data/utd-mhad}
OUT=${2:-work_dirs}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
$PY -m stgcn.convert utd-mhad "$UTD" data/utd_mhad_3d --layout kinect-v1 --frames 128 --no-progress
$PY -m stgcn.convert utd-mhad "$UTD" data/utd_mhad_openpose --layout openpose --frames 128 --no-progress
for cfg in ${CONFIGS:-utd_mhad utd_mhad_openpose}; do
  $PY -m stgcn.train "configs/train/$cfg.yaml" --work-dir "$OUT/$cfg" > "$OUT/$cfg.log" 2>&1 &
done
wait
for cfg in ${CONFIGS:-utd_mhad utd_mhad_openpose}; do
  $PY -m stgcn.eval --weights "$OUT/$cfg/best.pt" --json "$OUT/$cfg/eval_best.json" | tee -a "$OUT/$cfg.log"
done
