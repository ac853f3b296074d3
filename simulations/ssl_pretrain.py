r"""Centralized self-supervised pretraining and evaluation of a zoo encoder.

  python -m simulations.ssl_pretrain --dataset=mnist --model=cnn \
      --method=simclr --epochs=50 --batch_size=256 --lr=1e-3 \
      --out_dir=runs/ssl_mnist_simclr

Pretrains the encoder on the training images without labels, then reports
linear-probe and kNN test accuracy (against the same architecture at random
initialisation) and fine-tuning on --label_fractions of the labels (against
training from scratch on the same labels). Writes config.json,
metrics.jsonl, summary.json, embeddings.png, encoder.keras and checkpoints/
to --out_dir. Each method's own hyper-parameters are flags named as its
params fields (--temperature for simclr, ...; --helpfull lists them).
"""

import dataclasses

from absl import flags

from fedclf import cli
from fedclf import registry
from fedclf.errors import UserError

cli.define_common_flags()
cli.define_data_flags("mnist")
cli.define_model_flags("batch", "Normalization layers (ResNets).")
cli.define_optimizer_flags("", "adam", 1e-3)
# Cosine decay is the usual SSL schedule (SimCLR, SimSiam, Barlow Twins).
flags.FLAGS.set_default("lr_schedule", "cosine")
flags.DEFINE_string("method", "simclr",
                    "Registered SSL method: simclr, simsiam, barlow_twins, "
                    "vicreg, byol, ... (see --list).")
flags.DEFINE_integer("epochs", 50, "Pretraining epochs.")
flags.DEFINE_integer("batch_size", 256,
                     "Pretraining batch size (images; two views each).")
flags.DEFINE_integer("projection_dim", 128, "Projector output width.")
flags.DEFINE_integer("hidden_dim", 512, "Projector hidden width.")
flags.DEFINE_enum("projector_norm", "batch", ["batch", "none"],
                  "BatchNorm in the projector/predictor, or none.")
flags.DEFINE_float("crop_min_scale", 0.0,
                   "Smallest random-crop area fraction (0 = the dataset's "
                   "default: 0.5 for digits, 0.2 for colour images).")
# Overrides of single fields of the dataset's augmentations (-1 keeps the
# dataset's choice; fedclf.ssl.augment.default_for documents them).
_AUGMENT_OVERRIDES = {
    "intensity_probability": "Chance of brightness/contrast/gamma jitter "
                             "of a grayscale view.",
    "gamma": "Gamma jitter strength: exponent in [1/(1+g), 1+g].",
    "blur_probability": "Chance of a Gaussian blur.",
    "noise_std": "Largest std of additive Gaussian noise.",
    "erase_probability": "Chance of random erasing of one rectangle.",
    "rotation_degrees": "Random rotation range in degrees.",
}
for _field, _help in _AUGMENT_OVERRIDES.items():
  flags.DEFINE_float(_field, -1.0, f"{_help} -1: the dataset's default.")
flags.DEFINE_integer("probe_epochs", 30, "Linear-probe epochs.")
flags.DEFINE_float("probe_lr", 1e-2, "Linear-probe Adam learning rate.")
flags.DEFINE_integer("probe_batch_size", 256, "Linear-probe batch size.")
flags.DEFINE_integer("knn_k", 20, "Neighbours of the kNN evaluation.")
flags.DEFINE_list("label_fractions", ["0.01", "0.1"],
                  "Label shares for fine-tuning vs training from scratch "
                  "(empty to skip).")
flags.DEFINE_integer("finetune_epochs", 30,
                     "Epochs of fine-tuning (and of the from-scratch "
                     "baseline).")
flags.DEFINE_float("finetune_lr", 1e-3,
                   "Fine-tuning / from-scratch Adam learning rate.")
flags.DEFINE_integer("finetune_head_epochs", 0,
                     "Epochs that train the fine-tuned copy's new head on "
                     "the frozen pretrained encoder before every layer "
                     "trains (LP-FT; 0 = all layers from the start).")
flags.DEFINE_float("finetune_lr_scale", 1.0,
                   "The fine-tuned copy's all-layers learning rate as a "
                   "multiple of --finetune_lr (the from-scratch copy keeps "
                   "--finetune_lr).")
flags.DEFINE_integer("finetune_batch_size", 64,
                     "Fine-tuning / from-scratch batch size.")
flags.DEFINE_integer("retrieval_references", 10000,
                     "Training images whose embeddings the test embeddings "
                     "are looked up in (tensorflow-similarity's recall@k, "
                     "precision@k, mAP@R; 0 = skip).")
flags.DEFINE_integer("embedding_points", 2000,
                     "Test points in the t-SNE plot (0 = no plot).")
cli.define_run_flags("runs/ssl", "epochs", 5,
                     "Seed for data slices, init, shuffles and views.")
# Each method's own hyper-parameters (--temperature, --barlow_lambda,
# --predictor_hidden_dim, --byol_momentum, a --plugin method's), generated
# from the params dataclasses registered beside the methods.
cli.define_params_flags(registry.SSL_METHODS)

FLAGS = flags.FLAGS


def _label_fractions():
  fractions = []
  for value in FLAGS.label_fractions:
    try:
      fractions.append(float(value))
    except ValueError:
      raise UserError(f"label_fractions: {value!r} is not a number") from None
  return tuple(fractions)


def main(argv):
  del argv
  # Already loaded by cli.define_params_flags; imported here by name.
  from fedclf.registry import DATASETS  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import default_for  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import FinetuneRecipe  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import PretrainConfig  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import run_ssl_pretraining  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import SslConfig  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import SslRunConfig  # pylint: disable=g-import-not-at-top
  from fedclf.ssl.evaluate import fraction_key  # pylint: disable=g-import-not-at-top
  from fedclf.train import OptimizerConfig  # pylint: disable=g-import-not-at-top
  from fedclf.train import TrainConfig  # pylint: disable=g-import-not-at-top

  DATASETS.get(FLAGS.dataset)
  augment = None  # the dataset's default, resolved once it is loaded
  changes = {name: FLAGS[name].value for name in _AUGMENT_OVERRIDES
             if FLAGS[name].value >= 0}
  if FLAGS.crop_min_scale:
    changes["crop_scale"] = (FLAGS.crop_min_scale, 1.0)
  if changes:
    augment = dataclasses.replace(default_for(FLAGS.dataset), **changes)

  def adam(lr):
    return OptimizerConfig(name="adam", learning_rate=lr, schedule="cosine")

  config = SslRunConfig(
      data=cli.data_config_from_flags(FLAGS.seed),
      model_name=FLAGS.model,
      model=cli.model_config_from_flags(),
      ssl=SslConfig(
          method=FLAGS.method, projection_dim=FLAGS.projection_dim,
          hidden_dim=FLAGS.hidden_dim, projector_norm=FLAGS.projector_norm,
          seed=FLAGS.seed,
          params=cli.params_from_flags(registry.SSL_METHODS, FLAGS.method)),
      pretrain=PretrainConfig(
          epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
          optimizer=cli.optimizer_config_from_flags(""), augment=augment,
          checkpoint_every=FLAGS.checkpoint_every, seed=FLAGS.seed),
      probe=TrainConfig(epochs=FLAGS.probe_epochs,
                        batch_size=FLAGS.probe_batch_size,
                        optimizer=adam(FLAGS.probe_lr), checkpoint_every=0,
                        seed=FLAGS.seed),
      knn_k=FLAGS.knn_k,
      label_fractions=_label_fractions(),
      finetune=TrainConfig(epochs=FLAGS.finetune_epochs,
                           batch_size=FLAGS.finetune_batch_size,
                           optimizer=adam(FLAGS.finetune_lr),
                           checkpoint_every=0, seed=FLAGS.seed),
      finetune_recipe=FinetuneRecipe(head_epochs=FLAGS.finetune_head_epochs,
                                     lr_scale=FLAGS.finetune_lr_scale),
      embedding_points=FLAGS.embedding_points,
      retrieval_references=FLAGS.retrieval_references)
  summary = run_ssl_pretraining(config, FLAGS.out_dir, cli.flag_values_dict(),
                                resume=FLAGS.resume)
  line = (f"{summary['method']}: linear probe "
          f"{summary['linear_probe_accuracy']:.4f} (random init "
          f"{summary['random_init_linear_probe_accuracy']:.4f})  kNN "
          f"{summary['knn_accuracy']:.4f}")
  for fraction in config.label_fractions:
    pct = fraction_key(fraction)
    line += (f"  {pct}% labels: fine-tune "
             f"{summary[f'finetune_accuracy_{pct}']:.4f} vs scratch "
             f"{summary[f'supervised_accuracy_{pct}']:.4f}")
  print(f"{line}  -> {FLAGS.out_dir}/summary.json")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
