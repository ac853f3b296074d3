r"""fedclf's side of the peer benchmark: the shared workload
(`benchmarks.peers.workload`) as FedAvg rounds of `measure.make_simulation`
on the local or tff backend, every client sampled each round.

  python -m benchmarks.peers.fedclf_fedavg --backend=local --clients=10 \
      --examples_per_client=600 --rounds=4

Prints, as its last stdout line, one JSON object with "round_seconds" (each
round's `train_round`, the first one tracing); the caller measures this
process tree's memory (the tff backend's worker included).
"""

import argparse
import json

from benchmarks import measure
from benchmarks.peers import workload


def round_seconds(backend: str, clients: int, examples_per_client: int,
                  rounds: int):
  """Seconds of each of `rounds` FedAvg rounds, first (tracing) included."""
  sim = measure.make_simulation(clients, clients, examples_per_client,
                                backend, "cnn",
                                local_batch_size=workload.BATCH_SIZE)
  try:
    state = sim.rounds.initial_state()
    times = []
    for r in range(1, rounds + 1):
      seconds, _, state = measure.timed_round(sim, state, r)
      times.append(seconds)
    return times
  finally:
    sim.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--backend", choices=("local", "tff"), default="local")
  parser.add_argument("--clients", type=int, default=10)
  parser.add_argument("--examples_per_client", type=int, default=600)
  parser.add_argument("--rounds", type=int, default=4)
  args = parser.parse_args()
  times = round_seconds(args.backend, args.clients, args.examples_per_client,
                        args.rounds)
  print(json.dumps({"round_seconds": times, "backend": args.backend,
                    "clients": args.clients,
                    "examples_per_client": args.examples_per_client}),
        flush=True)


if __name__ == "__main__":
  main()
