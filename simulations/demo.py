r"""The offline demo behind `make demo`: no downloads, a few minutes on 2 cores.

On scikit-learn's embedded 8x8 digits it partitions the training set across
clients (Dirichlet label skew), prints and plots the per-client label
histogram, and trains the centralized baseline with the shared model zoo,
writing the standard results files under --out_dir.

  python -m simulations.demo --out_dir=demo_out
"""

import os

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_string("out_dir", "demo_out", "Output directory.")
flags.DEFINE_integer("num_clients", 10, "Clients to partition the data over.")
flags.DEFINE_float("dirichlet_alpha", 0.5, "Dirichlet label-skew alpha.")
flags.DEFINE_integer("epochs", 15, "Centralized training epochs.")
flags.DEFINE_integer("seed", 0, "Seed.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from fedclf import partition
  from fedclf.data import DataConfig
  from fedclf.data import load_dataset
  from fedclf.models import ModelConfig
  from fedclf.train import OptimizerConfig
  from fedclf.train import TrainConfig
  from fedclf.train.centralized import CentralizedConfig
  from fedclf.train.centralized import run_centralized
  # pylint: enable=g-import-not-at-top

  data = DataConfig("digits", seed=FLAGS.seed)
  ds = load_dataset(data)
  parts = partition.partition(
      "dirichlet", ds.y_train,
      partition.PartitionConfig(num_clients=FLAGS.num_clients,
                                seed=FLAGS.seed,
                                dirichlet_alpha=FLAGS.dirichlet_alpha))
  hist = partition.label_histogram(ds.y_train, parts, ds.num_classes)
  print(f"Dirichlet(alpha={FLAGS.dirichlet_alpha}) partition of "
        f"{len(ds.y_train)} digits over {FLAGS.num_clients} clients:")
  print(partition.format_histogram(hist))
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  partition.plot_histogram(
      hist, os.path.join(FLAGS.out_dir, "partition.png"),
      f"digits, Dirichlet alpha={FLAGS.dirichlet_alpha}")

  config = CentralizedConfig(
      data=data, model_name="cnn", model=ModelConfig(seed=FLAGS.seed),
      train=TrainConfig(epochs=FLAGS.epochs, batch_size=32,
                        optimizer=OptimizerConfig("momentum", 0.02,
                                                  schedule="cosine"),
                        seed=FLAGS.seed))
  summary = run_centralized(config, os.path.join(FLAGS.out_dir, "centralized"),
                            cli.flag_values_dict())
  print(f"\ncentralized cnn on digits: test accuracy "
        f"{summary['test_accuracy']:.4f}, macro F1 "
        f"{summary['test_macro_f1']:.4f}")
  print(f"results: {FLAGS.out_dir}/partition.png, "
        f"{FLAGS.out_dir}/centralized/summary.json")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
