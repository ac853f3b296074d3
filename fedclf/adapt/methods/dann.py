"""DANN: domain-adversarial training (Ganin et al. 2016, JMLR 17(59)).

The zoo encoder feeds two heads: the zoo classifier head, trained on the
labelled source, and a domain classifier (an MLP, one logit: source or
target), trained on source and unlabelled target features that pass through
a gradient-reversal layer. One backward pass of

    L = CE(head(f(x_s)), y_s) + BCE(domain(GRL_lambda(f([x_s, x_t]))), d)

teaches the domain classifier to separate the domains and the encoder, via
the reversed gradient, to make them inseparable while staying
discriminative for the labels. lambda follows the paper's schedule
2 / (1 + exp(-10 p)) - 1 over the training progress p in [0, 1]; the
paper's learning-rate annealing lr / (1 + 10 p)^0.75 is optional.

Its own epoch (the shared supervised loop trains one loss on one dataset),
run by `fedclf.train.epoch_driver.EpochDriver` like `fedclf.train.loop`:
each epoch's batch order derives from (seed, epoch), checkpoints hold the
models, the optimizer and the epoch, so `--resume` replays the
uninterrupted run's batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.grl import dann_lambda
from fedclf.adapt.grl import gradient_reversal
from fedclf.errors import UserError
from fedclf.models.building_blocks import SeedStream
from fedclf.registry import ADAPTATION_METHODS
from fedclf.results.tensorboard_log import run_tensorboard_dir
from fedclf.train.epoch_driver import DANN_SEED_OFFSET
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig
from fedclf.train.epoch_driver import last_epoch_metrics
from fedclf.train.loop import classification_loss
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import TrainConfig
from fedclf.train.optimizers import build_optimizer

# Offsets the domain classifier's initialiser seeds from the zoo model's,
# which is built from the same ModelConfig.seed.
_DOMAIN_SEED_OFFSET = 7919


@dataclasses.dataclass(frozen=True)
class DannParams:
  """DANN's hyper-parameters (Ganin et al. 2016); each is a flag of its
  name. `fedclf.adapt.unlabelled_target_clients` builds every federated
  method's model from them too, and its `dann` reads the lambda schedule.

  Attributes:
    dann_hidden: hidden widths of the domain classifier MLP on the encoder
      features (ReLU), before its single logit. ADDA's discriminator for
      digits has two layers of 500.
    dann_weight: the largest adaptation factor lambda; the schedule
      2 / (1 + exp(-gamma p)) - 1 (p: training progress) is scaled by it.
    dann_gamma: the schedule's steepness (10 in the paper).
    dann_feature_layer: the encoder layer whose output the domain
      classifier reads through the gradient-reversal layer ("" = the
      encoder's output, the head's input). The paper attaches it after the
      convolutions (e.g. the zoo models' "flatten"), which leaves the dense
      layers above to the labels alone.
    dann_anneal_lr: the paper's learning-rate annealing
      lr_p = lr / (1 + alpha p)^beta, replacing the optimizer's schedule.
    dann_alpha, dann_beta: the annealing constants (10 and 0.75 in the
      paper).
  """
  dann_hidden: Tuple[int, ...] = dataclasses.field(
      default=(500, 500),
      metadata={"help": "Hidden widths of the domain classifier MLP."})
  dann_weight: float = dataclasses.field(
      default=1.0,
      metadata={"help": "Largest adaptation factor lambda (the schedule "
                        "2/(1+exp(-gamma p))-1 is scaled by it)."})
  dann_gamma: float = dataclasses.field(
      default=10.0, metadata={"help": "The lambda schedule's gamma."})
  dann_feature_layer: str = dataclasses.field(
      default="",
      metadata={"help": "The encoder layer the domain classifier reads "
                        "(through the gradient reversal), e.g. flatten "
                        "(after the convolutions, as in the paper); empty: "
                        "the encoder output."})
  dann_anneal_lr: bool = dataclasses.field(
      default=False,
      metadata={"help": "The paper's lr annealing lr/(1+alpha p)^beta "
                        "(replaces --lr_schedule, which must stay "
                        "constant)."})
  dann_alpha: float = dataclasses.field(
      default=10.0, metadata={"help": "Annealing alpha."})
  dann_beta: float = dataclasses.field(
      default=0.75, metadata={"help": "Annealing beta."})

  def validate(self) -> None:
    if any(w < 1 for w in self.dann_hidden):
      raise UserError(f"dann domain classifier widths must be >= 1, got "
                      f"{list(self.dann_hidden)}")
    for name in ("dann_weight", "dann_gamma", "dann_alpha", "dann_beta"):
      value = getattr(self, name)
      if not math.isfinite(value) or value < 0:
        raise UserError(f"{name} must be >= 0, got {value}")

  def validate_training(self, train: TrainConfig) -> None:
    """The annealing takes the optimizer's schedule over (see `dann`)."""
    optimizer = train.optimizer
    if self.dann_anneal_lr and (optimizer.schedule != "constant" or
                                optimizer.warmup_epochs):
      raise UserError("dann's lr annealing replaces the lr schedule; use "
                      "the constant schedule without warm-up with it")


class AnnealedLearningRate(tf.keras.optimizers.schedules.LearningRateSchedule):
  """lr / (1 + alpha p)^beta with p = step / total_steps (Ganin et al. 2016,
  section 5.2.2)."""

  def __init__(self, initial: float, total_steps: int, alpha: float,
               beta: float):
    super().__init__()
    self.initial = float(initial)
    self.total_steps = max(1, int(total_steps))
    self.alpha = float(alpha)
    self.beta = float(beta)

  def __call__(self, step):
    progress = tf.minimum(tf.cast(step, tf.float32) / self.total_steps, 1.0)
    return self.initial / tf.pow(1.0 + self.alpha * progress, self.beta)

  def get_config(self):
    return {"initial": self.initial, "total_steps": self.total_steps,
            "alpha": self.alpha, "beta": self.beta}


def build_domain_classifier(feature_dim: int, hidden: Sequence[int],
                            seed: int) -> tf.keras.Model:
  """features -> ReLU MLP -> one logit (positive: target domain)."""
  seeds = SeedStream(seed + _DOMAIN_SEED_OFFSET)
  features = tf.keras.Input(shape=(feature_dim,), dtype=tf.float32,
                            name="features")
  x = features
  for i, width in enumerate(hidden, start=1):
    x = tf.keras.layers.Dense(int(width), activation="relu",
                              kernel_initializer=seeds.glorot_uniform(),
                              name=f"fc{i}")(x)
  logit = tf.keras.layers.Dense(1, kernel_initializer=seeds.glorot_uniform(),
                                dtype=tf.float32, name="domain_logit")(x)
  return tf.keras.Model(features, logit, name="domain_classifier")


def build_feature_tap(encoder: tf.keras.Model,
                      layer_name: str) -> tf.keras.Model:
  """image -> (domain-classifier features, encoder features), one pass.

  The first output is `layer_name`'s (flattened; "" = the encoder's own
  output), sharing the encoder's weights.

  Raises:
    UserError: the encoder has no layer `layer_name`.
  """
  if not layer_name:
    tapped = encoder.output
  else:
    names = [layer.name for layer in encoder.layers]
    if layer_name not in names:
      raise UserError(f"dann feature layer {layer_name!r} is not in the "
                      f"{encoder.name}; its layers: {', '.join(names[1:])}")
    tapped = encoder.get_layer(layer_name).output
    if tapped.shape.rank > 2:
      tapped = tf.keras.layers.Flatten(name="domain_features")(tapped)
  return tf.keras.Model(encoder.input, [tapped, encoder.output],
                        name="feature_tap")


@dataclasses.dataclass
class DannModels:
  """The zoo classifier split for DANN, and the domain classifier.

  `tap` maps images to (domain-classifier features, encoder features) in
  one pass (see `build_feature_tap`); `model` is encoder then head.
  """
  model: tf.keras.Model
  head: tf.keras.Model
  tap: tf.keras.Model
  domain_classifier: tf.keras.Model


def build_dann_models(task: AdaptationTask, params: DannParams
                      ) -> DannModels:
  model = task.build_classifier()
  tap = build_feature_tap(model.get_layer("encoder"),
                          params.dann_feature_layer)
  domain_classifier = build_domain_classifier(
      int(tap.output_shape[0][-1]), params.dann_hidden,
      task.model_config.seed)
  return DannModels(model, model.get_layer("head"), tap, domain_classifier)


def domain_loss_and_correct(domain_classifier: tf.keras.Model,
                            features: tf.Tensor, domain_labels: tf.Tensor,
                            lambda_: tf.Tensor):
  """The domain classifier's mean binary cross-entropy on `features` seen
  through the gradient-reversal layer, and its count of correct domains.

  `domain_labels` are floats: 0 for source, 1 for target examples.
  """
  logits = domain_classifier(gradient_reversal(features, lambda_),
                             training=True)[:, 0]
  loss = tf.reduce_mean(
      tf.nn.sigmoid_cross_entropy_with_logits(domain_labels, logits))
  correct = tf.reduce_sum(tf.cast(
      tf.equal(tf.cast(logits > 0, tf.float32), domain_labels), tf.float32))
  return loss, correct


def _epoch_order(n_source: int, n_target: int, batch: int, steps: int,
                 epoch_seed: int):
  """An epoch's source permutation and enough target indices for it, from
  the epoch's seed.

  The target set is usually of a different size: its indices are a chain of
  fresh permutations, so every target image is used about equally often.
  """
  rng = np.random.default_rng(epoch_seed)
  source = rng.permutation(n_source)
  needed = steps * batch
  target = np.concatenate([rng.permutation(n_target)
                           for _ in range(math.ceil(needed / n_target))])
  return source, target[:needed]


def _train_step_fn(models: DannModels,
                   optimizer: tf.keras.optimizers.Optimizer,
                   loss_fn: Callable[..., tf.Tensor],
                   variables: List[tf.Variable]) -> Callable[..., Tuple]:
  """DANN's compiled step: (source images, labels, target images, lambda)
  -> class loss, domain loss, correct labels, correct domains."""
  model, head, tap = models.model, models.head, models.tap
  domain_classifier = models.domain_classifier

  # The last, shorter batch of an epoch traces once more; no further.
  @tf.function(reduce_retracing=True)
  def train_step(images_s, labels_s, images_t, lambda_):
    n_s = tf.shape(images_s)[0]
    n_t = tf.shape(images_t)[0]
    with tf.GradientTape() as tape:
      # One encoder pass over both domains: normalization layers (if any)
      # then see the mixed batch, as in the paper's implementation.
      domain_features, features = tap(tf.concat([images_s, images_t], 0),
                                      training=True)
      logits = head(features[:n_s], training=True)
      class_loss = loss_fn(labels_s, logits)
      domain_loss, domain_correct = domain_loss_and_correct(
          domain_classifier, domain_features,
          tf.concat([tf.zeros([n_s]), tf.ones([n_t])], 0), lambda_)
      loss = class_loss + domain_loss
      if model.losses:
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits, -1), labels_s), tf.float32))
    return class_loss, domain_loss, correct, domain_correct

  return train_step


@ADAPTATION_METHODS.register("dann", params=DannParams)
def dann(task: AdaptationTask) -> AdaptationResult:
  config = task.config
  train_config = config.train
  params: DannParams = task.method_params("dann")
  pair = task.pair
  normalizations = task.normalizations()
  x_source = normalizations.source.apply(pair.source.x_train).astype(
      np.float32)
  y_source = pair.source.y_train.astype(np.int64)
  x_target = normalizations.target.apply(pair.target.x_train).astype(
      np.float32)
  if not len(y_source) or not len(x_target):
    raise UserError("dann needs source and target training images")
  batch = min(train_config.batch_size, len(y_source))
  steps_per_epoch = math.ceil(len(y_source) / batch)
  total_steps = steps_per_epoch * train_config.epochs

  models = build_dann_models(task, params)
  model, domain_classifier = models.model, models.domain_classifier
  optimizer = build_optimizer(train_config.optimizer, steps_per_epoch,
                              train_config.epochs)
  if params.dann_anneal_lr:
    # AdaptConfig.validate made sure no other schedule is asked for. A
    # schedule may replace a schedule on Keras optimizers (not a float).
    optimizer.learning_rate = AnnealedLearningRate(
        train_config.optimizer.learning_rate, total_steps, params.dann_alpha,
        params.dann_beta)
  loss_fn = classification_loss(pair.num_classes, train_config.label_smoothing)
  variables = model.trainable_variables + domain_classifier.trainable_variables
  driver = EpochDriver(
      EpochDriverConfig(
          epochs=train_config.epochs, seed=train_config.seed,
          seed_offset=DANN_SEED_OFFSET,
          checkpoint_dir=task.checkpoint_subdir("dann"),
          checkpoint_every=train_config.checkpoint_every, resume=task.resume,
          stage="training", log_prefix="dann: ",
          log_metrics=("train_loss", "train_accuracy", "domain_loss",
                       "domain_accuracy", "lambda", "target_test_accuracy"),
          divergence_hint="lower the learning rate or --dann_weight",
          examples_per_epoch=2 * len(y_source), setting=task.setting),
      {"model": model, "domain_classifier": domain_classifier,
       "optimizer": optimizer})

  train_step = _train_step_fn(models, optimizer, loss_fn, variables)

  def run_epoch(epoch: int, seed: int) -> Dict[str, float]:
    order_s, order_t = _epoch_order(len(y_source), len(x_target), batch,
                                    steps_per_epoch, seed)
    sums = np.zeros(4)
    lambda_ = 0.0
    for step in range(steps_per_epoch):
      idx_s = order_s[step * batch:(step + 1) * batch]
      idx_t = order_t[step * batch:step * batch + len(idx_s)]
      progress = ((epoch - 1) * steps_per_epoch + step) / max(total_steps, 1)
      lambda_ = dann_lambda(progress, params.dann_gamma, params.dann_weight)
      out = train_step(tf.constant(x_source[idx_s]),
                       tf.constant(y_source[idx_s]),
                       tf.constant(x_target[idx_t]),
                       tf.constant(lambda_, tf.float32))
      sums[0] += float(out[0]) * len(idx_s)
      sums[1] += float(out[1]) * 2 * len(idx_s)
      sums[2] += float(out[2])
      sums[3] += float(out[3])
    return {
        "train_loss": sums[0] / len(y_source),
        "train_accuracy": sums[2] / len(y_source),
        "domain_loss": sums[1] / (2 * len(y_source)),
        # Near 0.5 once the encoder's features confuse the domains.
        "domain_accuracy": sums[3] / (2 * len(y_source)),
        "lambda": lambda_,
    }

  target_test = (pair.target.x_test, pair.target.y_test)

  def evaluate(epoch: int) -> Dict[str, float]:
    if not config.eval_every or epoch % config.eval_every:
      return {}
    report = evaluate_classifier(model, target_test, normalizations.target,
                                 pair.num_classes,
                                 batch_size=train_config.eval_batch_size)
    return {"target_test_accuracy": report["accuracy"]}

  run = driver.run(run_epoch, evaluate, None, optimizer, task.recorder,
                   run_tensorboard_dir(task.recorder))
  # Resumed after training had finished: the last epoch's row, as logged.
  last = last_epoch_metrics(run.history, run.epochs_run, task.recorder,
                            driver.config.metric_prefix)
  details = {"dann": dataclasses.asdict(params),
             "domain_classifier_parameters": int(
                 domain_classifier.count_params())}
  if last:
    details.update({"final_domain_accuracy": last["domain_accuracy"],
                    "final_domain_loss": last["domain_loss"],
                    "final_lambda": last["lambda"]})
  return AdaptationResult(model, normalizations, run.epochs_run,
                          run.train_seconds, run.examples_per_second, details)
