#!/usr/bin/env bash
# Reproduce the shipped default model and its accuracy on a GPU machine: convert the three
# real-video 2D sets, merge them (configs/classes/real_video.yaml), train one model per seed side
# by side, and evaluate each seed's final.pt on every set's official test split.
#   tools/train_real_video.sh [SHARED_DATA_DIR] [OUT_DIR]   (SEEDS="0 1 2", EPOCHS: the config's)
set -euo pipefail
SRC=${1:-../shared/data}
OUT=${2:-work_dirs/real_video}
PY=${PYTHON:-python3}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
$PY -m stgcn.convert utd-mhad-2d "$SRC/utd-mhad-openpose2d" data/utd_mhad_2d --no-progress
$PY -m stgcn.convert penn-action "$SRC/penn-action" data/penn_action --no-progress
$PY -m stgcn.convert jhmdb "$SRC/jhmdb" data/jhmdb --no-progress
$PY -m stgcn.convert merge data/real_video data/penn_action data/utd_mhad_2d data/jhmdb \
    --classes configs/classes/real_video.yaml --no-progress
for seed in $SEEDS; do
  $PY -m stgcn.train configs/train/real_video.yaml --seed "$seed" --work-dir "$OUT/seed$seed" ${EPOCHS:+--epochs $EPOCHS} \
      > "$OUT/seed$seed.log" 2>&1 &
done
wait
for seed in $SEEDS; do
  $PY -m stgcn.eval --weights "$OUT/seed$seed/final.pt" --data-dir data/real_video \
      --json "$OUT/seed$seed/eval_final.json" | tee -a "$OUT/seed$seed.log"
done
