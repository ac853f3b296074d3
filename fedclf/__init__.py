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
