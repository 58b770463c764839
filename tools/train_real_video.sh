#!/usr/bin/env bash
# Reproduce the shipped default model and its accuracy on a GPU machine: convert the three
# real-video 2D sets, merge them (configs/classes/real_video.yaml), train one model per seed side
# by side, evaluate each seed's final.pt on every set's official test split, retrain the first
# seed's decoder on its fixed classifier (configs/train/real_video_decoder.yaml) and write
# OUT/real_video.pt from it: float16, the unknown answer calibrated (what
# stgcn/weights/real_video.pt is).
#   tools/train_real_video.sh [SHARED_DATA_DIR] [OUT_DIR]
# Environment: SEEDS ("0 1 2"), EPOCHS (the config's), CONFIG (configs/train/real_video_causal.yaml:
# joint and joint motion, causal), SHIP_STREAMS (the streams to evaluate apart and ship; empty: all
# the config's; "joint joint_motion" with CONFIG=configs/train/real_video_4s.yaml gives the centred
# model shipped until 2026-11-30, without its decoder); the seeds are spread over the GPUs there
# are and share the CPUs.
set -euo pipefail
SRC=${1:-../shared/data}
OUT=${2:-work_dirs/real_video}
PY=${PYTHON:-python3}
SEEDS=${SEEDS:-0 1 2}
CONFIG=${CONFIG:-configs/train/real_video_causal.yaml}
SHIP_STREAMS=${SHIP_STREAMS-}
GPUS=$($PY -c "import torch; print(max(1, torch.cuda.device_count()))")
mkdir -p "$OUT"
$PY -m stgcn.convert utd-mhad-2d "$SRC/utd-mhad-openpose2d" data/utd_mhad_2d --no-progress
$PY -m stgcn.convert penn-action "$SRC/penn-action" data/penn_action --no-progress
$PY -m stgcn.convert jhmdb "$SRC/jhmdb" data/jhmdb --no-progress
$PY -m stgcn.convert merge data/real_video data/penn_action data/utd_mhad_2d data/jhmdb \
    --classes configs/classes/real_video.yaml --no-progress
# each seed on its own slice of the CPUs (its data workers are as many as its CPUs)
n=$(echo $SEEDS | wc -w); per=$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))
i=0
for seed in $SEEDS; do
  CUDA_VISIBLE_DEVICES=$((i % GPUS)) taskset -c $((i * per % $(nproc)))-$(((i * per % $(nproc)) + per - 1)) \
      $PY -m stgcn.train "$CONFIG" --seed "$seed" --work-dir "$OUT/seed$seed" \
      ${EPOCHS:+--epochs $EPOCHS} > "$OUT/seed$seed.log" 2>&1 &
  i=$((i + 1))
done
wait
for seed in $SEEDS; do
  $PY -m stgcn.eval --weights "$OUT/seed$seed/final.pt" --data-dir data/real_video \
      --json "$OUT/seed$seed/eval_final.json" | tee -a "$OUT/seed$seed.log"
  if [ -n "$SHIP_STREAMS" ]; then
    $PY -m stgcn.eval --weights "$OUT/seed$seed/final.pt" --data-dir data/real_video --streams $SHIP_STREAMS \
        --json "$OUT/seed$seed/eval_shipped_streams.json" | tee -a "$OUT/seed$seed.log"
  fi
done
first=$(echo $SEEDS | cut -d' ' -f1)
$PY -m stgcn.train configs/train/real_video_decoder.yaml --init-from "$OUT/seed$first/final.pt" \
    --work-dir "$OUT/decoder" > "$OUT/decoder.log" 2>&1
$PY -m stgcn.calibrate --weights "$OUT/decoder/final.pt" ${SHIP_STREAMS:+--streams $SHIP_STREAMS} --half \
    --out "$OUT/real_video.pt"
