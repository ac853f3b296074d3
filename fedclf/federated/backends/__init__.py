"""Backends: what runs a federated algorithm's rounds.

    from fedclf.federated.backends import BACKENDS, BackendSpec

    backend = BACKENDS.get("local")(BackendSpec(...))
    state = backend.initial_state(model)
    state, outputs = backend.run_round(state, tasks, client_states, 1)
    backend.close()

Built in:
  local  in-process TensorFlow, clients in parallel in one graph (`local.py`)
  tff    TensorFlow Federated's runtime (`tff.py`) on C++ workers that
         fedclf owns (`tff_workers.py`) through its own execution context
         (`tff_context.py`)

A plugin adds one the same way: `@BACKENDS.register("name")` on a function
taking a `BackendSpec` and returning a `Backend` (see `protocol.py`).

The factories below import their backend's module only when called:
importing TFF takes ~50 s, which `local` runs must not pay; and `local.py`
imports the algorithm modules, which import `config.py`, which imports this
package to validate `--backend` (so a module-level import would be a cycle).
"""

from fedclf.federated.backends.protocol import Backend
from fedclf.federated.backends.protocol import BackendSpec
from fedclf.federated.backends.protocol import ClientTask
from fedclf.registry import BACKENDS

__all__ = ["BACKENDS", "Backend", "BackendSpec", "ClientTask"]


@BACKENDS.register("local")
def make_local_backend(spec: BackendSpec) -> Backend:
  """The in-process TensorFlow backend."""
  from fedclf.federated.backends.local import LocalBackend  # pylint: disable=g-import-not-at-top
  return LocalBackend(spec)


@BACKENDS.register("tff")
def make_tff_backend(spec: BackendSpec) -> Backend:
  """The TensorFlow Federated backend, on workers fedclf owns or is given.

  An aggregator without a TFF form (median, Krum) combines the clients'
  updates on the driver instead (see tff.py)."""
  from fedclf.federated.backends.tff import TffBackend  # pylint: disable=g-import-not-at-top
  return TffBackend(spec)
