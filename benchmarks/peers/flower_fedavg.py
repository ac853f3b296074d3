r"""The peer benchmark's workload written as Flower's quickstart-tensorflow
writes it: a Keras model, a `NumPyClient` whose `fit` calls `model.fit`, the
`FedAvg` strategy, and `flwr.simulation.run_simulation` on Ray with its
default resources (one CPU per client actor).

Runs in `.venv-peers` (flwr[simulation] 1.42 + tensorflow-cpu; `make
bench-peers` builds it), never imports fedclf, and reads MNIST from the
official files under --data_dir:

  .venv-peers/bin/python -m benchmarks.peers.flower_fedavg \
      --clients=10 --examples_per_client=600 --rounds=4

Prints, as its last stdout line, one JSON object whose "round_seconds" are
the driver's seconds of each round (from handing out the weights to the
aggregated new ones); the caller drops the first (Ray actors start, graphs
trace) and measures this process tree's memory itself.
"""

import argparse
import json
import os
import time

import flwr
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
import tensorflow as tf

from benchmarks.peers import workload

# Per-process cache of this run's training images (each Ray actor fills its
# own on first use, as the quickstart's load_data caches its dataset).
_DATA = {}
# Filled by the strategy, which runs in this (the driver's) process.
ROUND_START, ROUND_END = [], []


def load_model():
  model = workload.mcmahan_cnn(tf.keras)
  model.compile(tf.keras.optimizers.SGD(workload.CLIENT_LR),
                tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True), metrics=["accuracy"])
  return model


def load_partition(partition_id: int, clients: int, per_client: int,
                   data_dir: str):
  """This client's images and labels (float32 in [0, 1], int64)."""
  if "images" not in _DATA:
    _DATA["images"], _DATA["labels"] = workload.mnist_train_uint8(data_dir)
  rows = workload.client_indices(clients, per_client)[partition_id]
  return workload.as_model_inputs(_DATA["images"][rows],
                                  _DATA["labels"][rows])


class FlowerClient(NumPyClient):
  """The quickstart's client: set the weights, `model.fit`, return them."""

  def __init__(self, data):
    self.model = load_model()
    self.x, self.y = data

  def get_parameters(self, config):
    return self.model.get_weights()

  def fit(self, parameters, config):
    self.model.set_weights(parameters)
    self.model.fit(self.x, self.y, epochs=workload.LOCAL_EPOCHS,
                   batch_size=workload.BATCH_SIZE, verbose=0)
    return self.model.get_weights(), len(self.x), {}


class TimedFedAvg(FedAvg):
  """FedAvg that notes when each round hands out and aggregates weights."""

  def configure_fit(self, server_round, parameters, client_manager):
    ROUND_START.append(time.perf_counter())
    return super().configure_fit(server_round, parameters, client_manager)

  def aggregate_fit(self, server_round, results, failures):
    if failures:
      raise RuntimeError(f"round {server_round}: {len(failures)} clients "
                         f"failed: {failures[0]!r}")
    out = super().aggregate_fit(server_round, results, failures)
    ROUND_END.append(time.perf_counter())
    return out


def make_apps(clients: int, per_client: int, rounds: int, data_dir: str):
  def client_fn(context: Context):
    data = load_partition(int(context.node_config["partition-id"]), clients,
                          per_client, data_dir)
    return FlowerClient(data).to_client()

  def server_fn(context: Context):
    del context
    strategy = TimedFedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
        min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters(
            load_model().get_weights()))
    return ServerAppComponents(strategy=strategy,
                               config=ServerConfig(num_rounds=rounds))

  return ClientApp(client_fn=client_fn), ServerApp(server_fn=server_fn)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--clients", type=int, default=10)
  parser.add_argument("--examples_per_client", type=int, default=600)
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--data_dir",
                      default=os.environ.get("FEDCLF_DATA_DIR", ""))
  args = parser.parse_args()
  client_app, server_app = make_apps(args.clients, args.examples_per_client,
                                     args.rounds, args.data_dir)
  flwr.simulation.run_simulation(server_app=server_app, client_app=client_app,
                                 num_supernodes=args.clients)
  if len(ROUND_END) != args.rounds:
    raise SystemExit(f"flower_fedavg: {len(ROUND_END)} of {args.rounds} "
                     f"rounds finished")
  print(json.dumps({
      "round_seconds": [e - s for s, e in zip(ROUND_START, ROUND_END)],
      "clients": args.clients, "examples_per_client": args.examples_per_client,
      "flwr": flwr.__version__, "tensorflow": tf.__version__}), flush=True)


if __name__ == "__main__":
  main()
