#!/usr/bin/env bash
# McMahan et al. 2017, Table 2: rounds for the MNIST CNN to reach 99% test
# accuracy (100 clients, C = 0.1). Resumable: rerun and unfinished runs
# continue from their checkpoints; finished runs are skipped.
#   experiments/mcmahan.sh [run-name ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/mcmahan}
run() {
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then echo "skip $name (done)"; return; fi
  local resume=""
  [ -d "$OUT/$name/checkpoints" ] && resume="--resume"
  "$PY" -m simulations.federated "$@" --out_dir="$OUT/$name" $resume
}
C=experiments/mcmahan
# Learning rates: the grid of the paper's Table 2 search, one run per value.
for lr in 0.1 0.05 0.2; do
  run fedavg_iid_e5_b10_lr$lr --flagfile=$C/cnn_iid.cfg --algorithm=fedavg \
    --client_lr=$lr --rounds=60
done
for lr in 0.1 0.05 0.2; do
  run fedavg_shards_e5_b10_lr$lr --flagfile=$C/cnn_pathological.cfg \
    --algorithm=fedavg --client_lr=$lr --rounds=400
done
for lr in 0.2 0.1 0.4; do
  run fedsgd_iid_lr$lr --flagfile=$C/cnn_iid.cfg --algorithm=fedsgd \
    --client_lr=$lr --rounds=1000 --eval_every=5
done
"$PY" -m simulations.tables --runs="$OUT" --out="$OUT/README.md" \
  --plot="$OUT/accuracy.png" \
  --title="McMahan et al. 2017 Table 2 (MNIST CNN, 100 clients, C=0.1)"
