#!/usr/bin/env bash
# NIID-Bench protocol (Li et al. 2022) on Fashion-MNIST: 10 clients, all in
# every round, 50 rounds, 10 local epochs, batch 64, SGD lr 0.01 momentum 0.9,
# the conv(6)-conv(16)-fc(120)-fc(84) CNN (fedclf's lenet5); FedAvg, FedProx
# (mu 0.01) and SCAFFOLD under IID, Dirichlet(0.5) and #C=2 label skew.
# Resumable: rerun to continue (checkpoints every round); finished runs skip.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/niid_bench}
. experiments/lib.sh
run() { run_resumable simulations.federated "$@"; }
for partition in iid dirichlet labels_per_client; do
  for algorithm in fedavg fedprox scaffold; do
    run "${algorithm}_${partition}" --flagfile=experiments/niid_bench/fmnist.cfg \
      --algorithm="$algorithm" --partition="$partition"
  done
done
"$PY" -m simulations.tables --runs="$OUT" --out="$OUT/README.md" \
  --plot="$OUT/accuracy.png" --title="NIID-Bench protocol, Fashion-MNIST (compare: Li et al. 2022, Table 3)"
