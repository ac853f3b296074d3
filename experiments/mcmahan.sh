#!/usr/bin/env bash
# McMahan et al. 2017, Table 2: rounds for the MNIST CNN to reach 99% test
# accuracy (100 clients, C = 0.1). Resumable: rerun and unfinished runs
# continue from their checkpoints; finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/mcmahan}
. experiments/lib.sh
run() { run_resumable simulations.federated "$@"; }
C=experiments/mcmahan
# Learning rates: the paper tuned each setting on a grid; the first value
# of each grid is run first (the script is resumable and long: about 25 s
# per FedAvg round on 2 CPU cores).
run fedavg_iid_e5_b10_lr0.1 --flagfile=$C/cnn_iid.cfg --algorithm=fedavg \
  --client_lr=0.1 --rounds=60
run fedavg_shards_e5_b10_lr0.1 --flagfile=$C/cnn_pathological.cfg \
  --algorithm=fedavg --client_lr=0.1 --rounds=400
run fedsgd_iid_lr0.2 --flagfile=$C/cnn_iid.cfg --algorithm=fedsgd \
  --client_lr=0.2 --rounds=1000 --eval_every=5
for lr in 0.05 0.2; do
  run fedavg_iid_e5_b10_lr$lr --flagfile=$C/cnn_iid.cfg --algorithm=fedavg \
    --client_lr=$lr --rounds=60
  run fedavg_shards_e5_b10_lr$lr --flagfile=$C/cnn_pathological.cfg \
    --algorithm=fedavg --client_lr=$lr --rounds=400
done
for lr in 0.1 0.4; do
  run fedsgd_iid_lr$lr --flagfile=$C/cnn_iid.cfg --algorithm=fedsgd \
    --client_lr=$lr --rounds=1000 --eval_every=5
done
"$PY" -m simulations.tables --runs="$OUT" --out="$OUT/README.md" \
  --plot="$OUT/accuracy.png" \
  --title="McMahan et al. 2017 Table 2 (MNIST CNN, 100 clients, C=0.1)"
