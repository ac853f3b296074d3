"""What several federated tests need: one simulation run to its end."""

from fedclf.federated import Simulation


def final_weights(cfg, out_dir):
  """Runs `cfg` into `out_dir`; returns (final server state, summary)."""
  sim = Simulation(cfg, str(out_dir), {})
  try:
    summary = sim.run()
  finally:
    sim.close()
  return sim.final_state, summary
