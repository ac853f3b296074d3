#!/usr/bin/env bash
# Centralized baselines for the README table (results/baselines/).
# Resumable: rerun the script and unfinished runs continue from checkpoints;
# finished runs (summary.json present) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/baselines}
. experiments/lib.sh
run() { run_resumable baselines.centralized "$@"; }
run mnist_cnn --dataset=mnist --model=cnn --epochs=10 --batch_size=64 \
  --optimizer=momentum --lr=0.05 --lr_schedule=cosine --weight_decay=0 \
  --val_fraction=0.1 --seed=0
run usps_cnn --dataset=usps --model=cnn --epochs=30 --batch_size=32 \
  --optimizer=momentum --lr=0.02 --lr_schedule=cosine --augment=crop,rotate \
  --val_fraction=0.1 --seed=0
run fashion_mnist_cnn --dataset=fashion_mnist --model=cnn --epochs=15 \
  --batch_size=64 --optimizer=momentum --lr=0.05 --lr_schedule=cosine \
  --dropout=0.5 --augment=crop --label_smoothing=0.1 --val_fraction=0.1 --seed=0
"$PY" -m simulations.tables --runs="$OUT" --out="$OUT/README.md" \
  --title="Centralized baselines"
