#!/usr/bin/env bash
# Train configs over seeds side by side on a GPU machine, each on a data set (its train split;
# --data-dir), and evaluate each run's final epoch on that set's official test split (no
# selection on it): OUT/CONFIG_DATA/seedS/eval_final.json.
#   tools/train_seeds.sh OUT CONFIG=DATA_DIR [CONFIG=DATA_DIR ...]
# e.g. tools/train_seeds.sh work_dirs/acc configs/train/utd_mhad_4s.yaml=data/utd_mhad_3d
# Environment: SEEDS ("0 1 2"), EPOCHS (each config's), CPUS and CPU_FIRST (the CPUs to use:
# all by default), GPU_IDS (the GPUs to use, e.g. "1": all by default). The runs are spread over
# those GPUs and each gets its own slice of those CPUs (its data workers are as many as its CPUs).
set -euo pipefail
OUT=$1; shift
PY=${PYTHON:-python3}
SEEDS=${SEEDS:-0 1 2}
read -r -a GPU_IDS <<< "${GPU_IDS:-$(seq -s ' ' 0 $(( $($PY -c "import torch; print(max(1, torch.cuda.device_count()))") - 1 )))}"
runs=$(( $# * $(echo $SEEDS | wc -w) ))
CPUS=${CPUS:-$(nproc)}; CPU_FIRST=${CPU_FIRST:-0}
per=$(( CPUS / runs > 0 ? CPUS / runs : 1 ))
i=0
for pair in "$@"; do
  cfg=${pair%%=*}; data=${pair#*=}; name=$(basename "$cfg" .yaml)_$(basename "$data")
  for seed in $SEEDS; do
    dir="$OUT/$name/seed$seed"; mkdir -p "$dir"
    first=$((CPU_FIRST + i * per % CPUS))
    CUDA_VISIBLE_DEVICES=${GPU_IDS[i % ${#GPU_IDS[@]}]} taskset -c $first-$((first + per - 1)) \
        $PY -m stgcn.train "$cfg" --data-dir "$data" --seed "$seed" --work-dir "$dir" ${EPOCHS:+--epochs $EPOCHS} \
        > "$dir/train.log" 2>&1 &
    i=$((i + 1))
  done
done
wait
for pair in "$@"; do
  cfg=${pair%%=*}; data=${pair#*=}; name=$(basename "$cfg" .yaml)_$(basename "$data")
  for seed in $SEEDS; do
    dir="$OUT/$name/seed$seed"
    $PY -m stgcn.eval --weights "$dir/final.pt" --data-dir "$data" --json "$dir/eval_final.json" --workers 2 \
        >> "$dir/train.log" 2>&1 &
  done
done
wait
grep -H "^top-1\|^next-frame" "$OUT"/*/seed*/train.log
