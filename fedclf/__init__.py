"""fedclf: federated and self-supervised image-classification simulation on TensorFlow."""

import os

__version__ = "0.1.0"

# fedclf forks only to exec at once (TFF's worker_binary, with a preexec_fn
# that ties the worker to its parent: fedclf/federated/backends/
# tff_workers.py). gRPC core's fork handlers, on by default in grpcio's
# build, wait at every fork for gRPC's threads to quiesce, and with TFF's
# channels and event-loop threads alive they can wait forever (a clean-clone
# `make test` hung in test_two_workers_on_localhost's second fork, stack in
# cygrpc's pthread_atfork handler). gRPC documents disabling them for the
# fork-then-exec case; core reads the setting once, at its first use, so it
# is set here, before any fedclf module imports gRPC (a user's own value is
# kept).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# TensorFlow's own CPU kernels have no gradient for grouped convolutions,
# which the local backend's batched clients run every convolution as
# (fedclf/models/stacked.py); oneDNN's kernels have one. TensorFlow 2.14
# turns oneDNN on by default only on CPUs with AVX-512-class features, so
# on an AVX2-only CPU the batched LeNet-5 raised in every client's first
# step. fedclf asks for oneDNN everywhere (read once, when TensorFlow loads;
# a user's own value is kept), so that a run takes the same path on every
# x86 CPU; where it is still off (TensorFlow imported first, or the user's
# 0), `--client_batching=auto` trains in replicas and `on` says why
# (fedclf/federated/backends/batched.py). Runs record the state
# (`onednn` in config.json).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
