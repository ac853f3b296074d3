"""What several federated tests need: one simulation run to its end."""

import dataclasses

import numpy as np

from fedclf.federated import Simulation
from fedclf.federated.backends import tff_data


def final_weights(cfg, out_dir):
  """Runs `cfg` into `out_dir`; returns (final server state, summary)."""
  sim = Simulation(cfg, str(out_dir), {})
  try:
    summary = sim.run()
  finally:
    sim.close()
  return sim.final_state, summary


def with_own_tff_data(cfg, directory):
  """`cfg` with the TFF workers' data files in `directory` (on the `tff`
  backend): a test that poisons them must not touch the files other runs
  share (by checksum)."""
  if cfg.simulation.backend != "tff":
    return cfg
  return dataclasses.replace(cfg, simulation=dataclasses.replace(
      cfg.simulation, tff_data_dir=str(directory)))


def poison_examples(sim, indices, value):
  """Sets the training images at `indices` to `value` where the clients of
  `sim` read them: the local backend's variable, or the files the tff
  backend's workers map (`with_own_tff_data`)."""
  if sim.sim.backend == "tff":
    data = sim.backend.data
    assert data.directory != tff_data.default_data_dir()
    x = np.memmap(data.path("x.bin"), np.float32, "r+", shape=data.x_shape)
    x[indices] = value
    x.flush()
    return
  x = sim.backend.x.numpy()
  x[indices] = value
  sim.backend.x.assign(x)
