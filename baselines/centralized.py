r"""Centralized supervised baseline.

  python -m baselines.centralized --dataset=mnist --model=cnn --epochs=12 \
      --optimizer=momentum --lr=0.05 --lr_schedule=cosine --out_dir=runs/mnist_cnn

Writes config.json, metrics.jsonl, summary.json, confusion_matrix.png,
checkpoints/ and model.keras to --out_dir.
"""

from absl import flags

from fedclf import cli

cli.define_common_flags()
cli.define_data_flags("mnist")
cli.define_optimizer_flags("", "momentum", 0.05)
cli.define_model_flags("batch", "Normalization layers (ResNets).")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Mini-batch size.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing in [0, 1).")
flags.DEFINE_list("augment", [],
                  "Augmentations: any of crop, flip, rotate, jitter.")
flags.DEFINE_integer("early_stopping_patience", 0,
                     "Stop after this many epochs without validation "
                     "improvement (0 = off).")
flags.DEFINE_float("val_fraction", 0.1,
                   "Holdout fraction of the training set for validation.")
flags.DEFINE_integer("cv_folds", 0,
                     "k-fold cross-validation on the training set (>= 2).")
flags.DEFINE_float("label_fraction", 1.0,
                   "Train on this stratified fraction of the labels.")
cli.define_input_scaling_flag()
cli.define_init_encoder_flags()
cli.define_run_flags("runs/centralized", "epochs", 1,
                     "Seed for data slices, init and shuffling.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # Imported here so --help and flag errors answer without loading TF.
  from fedclf.data.preprocess import AugmentConfig  # pylint: disable=g-import-not-at-top
  from fedclf.models.pretrained import EncoderInit  # pylint: disable=g-import-not-at-top
  from fedclf.train import TrainConfig  # pylint: disable=g-import-not-at-top
  from fedclf.train.centralized import CentralizedConfig  # pylint: disable=g-import-not-at-top
  from fedclf.train.centralized import run_centralized  # pylint: disable=g-import-not-at-top
  from fedclf.registry import DATASETS  # pylint: disable=g-import-not-at-top

  DATASETS.get(FLAGS.dataset)
  data = cli.data_config_from_flags(FLAGS.seed)
  config = CentralizedConfig(
      data=data,
      model_name=FLAGS.model,
      model=cli.model_config_from_flags(),
      train=TrainConfig(
          epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
          optimizer=cli.optimizer_config_from_flags(""),
          label_smoothing=FLAGS.label_smoothing,
          augment=AugmentConfig.from_names(FLAGS.augment),
          early_stopping_patience=FLAGS.early_stopping_patience,
          checkpoint_every=FLAGS.checkpoint_every, seed=FLAGS.seed),
      val_fraction=FLAGS.val_fraction,
      cv_folds=FLAGS.cv_folds,
      label_fraction=FLAGS.label_fraction,
      input_scaling=FLAGS.input_scaling,
      encoder_init=EncoderInit(FLAGS.init_encoder, FLAGS.freeze_encoder))
  summary = run_centralized(config, FLAGS.out_dir, cli.flag_values_dict(),
                            resume=FLAGS.resume)
  print(f"test accuracy {summary['test_accuracy']:.4f}  macro F1 "
        f"{summary['test_macro_f1']:.4f}  -> {FLAGS.out_dir}/summary.json")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
