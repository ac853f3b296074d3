"""The backend registry: both built-in backends are listed, an unknown name
is the registry's one-line error, and a `local` run never imports TFF
(~50 s)."""

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
# clients; prints the modules that matter.
_LOCAL_ROUND_SCRIPT = textwrap.dedent("""\
    import sys
    import numpy as np
    import tensorflow as tf
    from fedclf.federated import AlgorithmConfig
    from fedclf.federated import build_algorithm
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
  assert "tff imported: False" in lines, proc.stdout
