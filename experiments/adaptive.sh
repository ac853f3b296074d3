#!/usr/bin/env bash
# Adaptive server optimizers (Reddi et al. 2021) against FedAvg on
# Dirichlet(0.1) Fashion-MNIST, 100 clients, 10 per round. Server learning
# rates from a small grid per optimizer. Resumable like the other scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/adaptive}
. experiments/lib.sh
run() { run_resumable simulations.federated "$@"; }
C=experiments/adaptive/fmnist_dir0.1.cfg
run fedavg --flagfile=$C --algorithm=fedavg
for lr in 1.0 0.3; do
  run fedavgm_slr$lr --flagfile=$C --algorithm=fedavgm --server_lr=$lr \
    --server_momentum=0.9
done
for alg in fedadam fedyogi; do
  for lr in 0.01 0.03; do
    run ${alg}_slr$lr --flagfile=$C --algorithm=$alg --server_lr=$lr
  done
done
"$PY" -m simulations.tables --runs="$OUT" --out="$OUT/README.md" \
  --plot="$OUT/accuracy.png" --title="Adaptive server optimizers vs FedAvg, Fashion-MNIST Dirichlet(0.1)"
