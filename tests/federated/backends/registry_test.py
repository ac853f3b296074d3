"""The backend registry: both built-in backends are listed, an unknown name
is the registry's one-line error, and neither a `local` run nor a refused
`tff` one imports TFF (~50 s)."""

import os
import subprocess
import sys
import textwrap

import pytest

from fedclf.federated import SimulationConfig
from fedclf.registry import BACKENDS
from fedclf.registry import UnknownNameError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def test_both_builtin_backends_are_registered():
  assert {"local", "tff"} <= set(BACKENDS.names())


def test_unknown_backend_is_the_registry_error():
  with pytest.raises(UnknownNameError,
                     match=r"^unknown backend 'spark'; choose one of: "
                     r"local, tff") as e:
    SimulationConfig(backend="spark").validate()
  assert "\n" not in str(e.value)


# Builds the `local` backend through the registry, runs one round of two
# clients, then asks for a `tff` backend with an aggregator that has no TFF
# form; prints the modules that matter.
_LOCAL_ROUND_SCRIPT = textwrap.dedent("""\
    import sys
    import numpy as np
    import tensorflow as tf
    from fedclf.errors import UserError
    from fedclf.federated import AlgorithmConfig
    from fedclf.federated import build_algorithm
    from fedclf.federated.aggregators import Aggregator
    from fedclf.federated.backends import BACKENDS
    from fedclf.federated.backends import BackendSpec

    def model_fn():
      return tf.keras.Sequential([tf.keras.layers.InputLayer((4,)),
                                  tf.keras.layers.Dense(3)])

    rng = np.random.default_rng(0)
    algorithm = build_algorithm("fedavg", AlgorithmConfig(local_batch_size=2))
    spec = BackendSpec(
        algorithm=algorithm, model_fn=model_fn,
        x_train=rng.normal(size=(8, 4)).astype(np.float32),
        y_train=rng.integers(0, 3, size=8), batch_shape=(2, 2),
        clients_per_round=2, num_clients=2, seed=0, parallel_clients=2)
    backend = BACKENDS.get("local")(spec)
    state = backend.initial_state(model_fn())
    tasks = [(c, np.arange(4 * c, 4 * c + 4, dtype=np.int32).reshape(2, 2),
              2, 4, np.array([0, c], np.int64)) for c in range(2)]
    state, outputs = backend.run_round(state, tasks, {}, 1)
    backend.close()
    print("round", state.round_num, "clients", len(outputs))

    class NoTffForm(Aggregator):
      name = "no_tff_form"
      has_tff_form = False

    try:
      BACKENDS.get("tff")(BackendSpec(
          algorithm=type(algorithm)("x", algorithm.client_work,
                                    algorithm.server, NoTffForm()),
          model_fn=model_fn, x_train=spec.x_train, y_train=spec.y_train,
          batch_shape=spec.batch_shape, clients_per_round=2, num_clients=2,
          seed=0))
    except UserError as e:
      print("refused:", e)
    print("tff imported:", "tensorflow_federated" in sys.modules)
    """)


def test_local_backend_never_imports_tff(tmp_path):
  script = tmp_path / "local_round.py"
  script.write_text(_LOCAL_ROUND_SCRIPT)
  proc = subprocess.run(
      [sys.executable, str(script)], cwd=ROOT, capture_output=True,
      text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert "round 1 clients 2" in lines
  assert any(l.startswith("refused:") and "no TFF form" in l for l in lines)
  assert "tff imported: False" in lines, proc.stdout
