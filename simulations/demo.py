r"""The offline demo behind `make demo`: fedclf in miniature, no downloads,
a few minutes on 2 CPU cores.

On scikit-learn's embedded 8x8 digits, the same CNN from the model zoo is
trained three ways: centrally, with FedAvg on IID clients and with FedAvg on
Dirichlet(0.3) label-skewed clients. Prints a table and writes
`demo_out/README.md`, `demo_out/accuracy.png` (test accuracy per round) and
each run's standard results files.

  python -m simulations.demo --out_dir=demo_out

An --out_dir that holds an earlier demo is refused; --overwrite moves it
aside (`make demo` passes it).
"""

import os

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_string("out_dir", "demo_out", "Output directory.")
cli.define_overwrite_flag()
flags.DEFINE_integer("num_clients", 20, "Simulated clients.")
flags.DEFINE_integer("clients_per_round", 5, "Clients per round.")
flags.DEFINE_integer("rounds", 30, "Federated rounds.")
flags.DEFINE_integer("local_epochs", 2, "Local epochs per round.")
flags.DEFINE_float("dirichlet_alpha", 0.3, "Dirichlet label-skew alpha.")
flags.DEFINE_integer("epochs", 15, "Centralized training epochs.")
flags.DEFINE_integer("seed", 0, "Seed.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  import dataclasses
  from fedclf import federated
  from fedclf.data import DataConfig
  from fedclf.models import ModelConfig
  from fedclf.partition import DirichletParams
  from fedclf.partition import PartitionConfig
  from fedclf.results import curves
  from fedclf.results import tables
  from fedclf.results.record import atomic_write_text
  from fedclf.train import OptimizerConfig
  from fedclf.train import TrainConfig
  from fedclf.train.centralized import CentralizedConfig
  from fedclf.train.centralized import run_centralized
  # pylint: enable=g-import-not-at-top

  data = DataConfig("digits", seed=FLAGS.seed)
  model = ModelConfig(seed=FLAGS.seed)
  flags_record = cli.flag_values_dict()
  out = FLAGS.out_dir
  central = run_centralized(
      CentralizedConfig(
          data=data, model_name="cnn", model=model, val_fraction=0.0,
          train=TrainConfig(epochs=FLAGS.epochs, batch_size=32,
                            optimizer=OptimizerConfig("momentum", 0.02,
                                                      schedule="cosine"),
                            seed=FLAGS.seed)),
      os.path.join(out, "centralized"), flags_record)

  base = federated.FederatedRunConfig(
      data=data, model_name="cnn", model=model,
      partition=PartitionConfig(num_clients=FLAGS.num_clients,
                                seed=FLAGS.seed),
      simulation=federated.SimulationConfig(
          algorithm="fedavg",
          algorithm_config=federated.AlgorithmConfig(
              client_lr=0.05, local_epochs=FLAGS.local_epochs,
              local_batch_size=10),
          num_clients=FLAGS.num_clients,
          clients_per_round=FLAGS.clients_per_round, rounds=FLAGS.rounds,
          per_client_eval=FLAGS.num_clients, checkpoint_every=0,
          seed=FLAGS.seed))
  runs = {
      "fedavg_iid": dataclasses.replace(base, partitioner="iid"),
      f"fedavg_dirichlet{FLAGS.dirichlet_alpha}": dataclasses.replace(
          base, partitioner="dirichlet", partition=dataclasses.replace(
              base.partition, params=DirichletParams(FLAGS.dirichlet_alpha))),
  }
  lines = {}
  for name, config in runs.items():
    federated.run_federated(config, os.path.join(out, name), flags_record)
    lines[name] = curves.read_curve(os.path.join(out, name))

  curves.plot_round_curves(
      lines, os.path.join(out, "accuracy.png"),
      "cnn on digits: FedAvg vs centralized",
      {"centralized": central["test_accuracy"]})
  table = tables.results_table(tables.load_runs(out),
                               "fedclf demo: cnn on digits")
  atomic_write_text(os.path.join(out, "README.md"),
                    table + "\n![accuracy per round](accuracy.png)\n")
  print(table)
  print(f"plot: {out}/accuracy.png  tables: {out}/README.md")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
