"""The joint training loop of the adversarial methods (dann, cdan, mdd).

Each step takes `batch_size` labelled source images and as many unlabelled
target images, runs the encoder once over both and the classifier head
over both, and does one backward pass of

    L = CE(head(f(x_s)), y_s) + adversary_loss(GRL_lambda(...), ...)

where the method's `Adversary` (a domain classifier for DANN, a conditional
one for CDAN, an auxiliary classifier for MDD) reads features through a
gradient-reversal layer: it minimizes its loss, the encoder maximizes it.
lambda follows Ganin et al.'s schedule 2 / (1 + exp(-gamma p)) - 1 times the
method's weight over the progress p in [0, 1] (per step); the learning
rate optionally their annealing lr / (1 + alpha p)^beta.

An epoch is one pass over the source training set (steps =
ceil(n_source / batch_size)); the target indices are a chain of fresh
permutations, so every target image is used about equally often whatever
the two sizes. The model returned is the last epoch's: no target label is
read for training or selection. `fedclf.train.epoch_driver.EpochDriver`
runs the epochs: each epoch's batch order derives from (seed, epoch) and
the checkpoints hold the models, the optimizer and the epoch, so `--resume`
replays the uninterrupted run's batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.adapt.grl import dann_lambda
from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.errors import UserError
from fedclf.models.building_blocks import SeedStream
from fedclf.results.tensorboard_log import run_tensorboard_dir
from fedclf.train.epoch_driver import DANN_SEED_OFFSET
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig
from fedclf.train.epoch_driver import last_epoch_metrics
from fedclf.train.loop import classification_loss
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import TrainConfig
from fedclf.train.optimizers import build_optimizer

# What every adversarial run states in its summary.
EPOCH_DEFINITION = ("one pass over the source training set; batch_size "
                    "source plus batch_size target images per step")


@dataclasses.dataclass(frozen=True)
class AdversarialSchedule:
  """The schedules the adversarial methods share (Ganin et al. 2016,
  section 5.2.2); each is a flag of its name, common to dann, cdan and mdd.

  Attributes:
    dann_gamma: the lambda schedule's steepness (10 in the paper).
    dann_anneal_lr: the paper's learning-rate annealing
      lr_p = lr / (1 + alpha p)^beta, replacing the optimizer's schedule.
    dann_alpha, dann_beta: the annealing constants (10 and 0.75).
  """
  dann_gamma: float = dataclasses.field(
      default=10.0,
      metadata={"help": "The lambda schedule's gamma (dann, cdan, mdd)."})
  dann_anneal_lr: bool = dataclasses.field(
      default=True,
      metadata={"help": "The paper's lr annealing lr/(1+alpha p)^beta "
                        "(dann, cdan, mdd; replaces --lr_schedule, which "
                        "must stay constant)."})
  dann_alpha: float = dataclasses.field(
      default=10.0, metadata={"help": "Annealing alpha."})
  dann_beta: float = dataclasses.field(
      default=0.75, metadata={"help": "Annealing beta."})

  def validate(self) -> None:
    for name in ("dann_gamma", "dann_alpha", "dann_beta"):
      check_non_negative(name, getattr(self, name))

  def validate_training(self, train: TrainConfig) -> None:
    """The annealing takes the optimizer's schedule over."""
    optimizer = train.optimizer
    if self.dann_anneal_lr and (optimizer.schedule != "constant" or
                                optimizer.warmup_epochs):
      raise UserError("the lr annealing (--dann_anneal_lr) replaces the lr "
                      "schedule; use the constant schedule without warm-up "
                      "with it, or --dann_anneal_lr=false")


def check_non_negative(name: str, value: float) -> None:
  if not math.isfinite(value) or value < 0:
    raise UserError(f"{name} must be >= 0, got {value}")


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


# (adversary features of source then target [2n, d], class logits [2n, c],
#  n source rows, lambda) -> (loss, count of examples the adversary "wins").
AdversaryLoss = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor],
                         Tuple[tf.Tensor, tf.Tensor]]


@dataclasses.dataclass
class Adversary:
  """What a method adds to the classifier in the joint step.

  Attributes:
    tap: image -> (the features the adversary reads, the encoder's
      output), one pass sharing the classifier's encoder weights.
    models: the adversary's trainable parts by checkpoint name.
    loss: see `AdversaryLoss`; it applies the gradient reversal itself.
    weight: the largest lambda (the schedule is scaled by it).
    metric: the log name of the rate of loss's count over both domains
      (DANN's domain accuracy: near 0.5 once the domains are confused).
  """
  tap: tf.keras.Model
  models: Mapping[str, tf.keras.Model]
  loss: AdversaryLoss
  weight: float
  metric: str = "domain_accuracy"

  def trainable_variables(self) -> List[tf.Variable]:
    return [v for model in self.models.values()
            for v in model.trainable_variables]


def build_adversary_mlp(feature_dim: int, hidden: Sequence[int],
                        outputs: int, seed: int, output_name: str,
                        name: str) -> tf.keras.Model:
  """features -> ReLU MLP of widths `hidden` -> `outputs` logits, seeded
  (DANN's and CDAN's domain classifiers, MDD's auxiliary classifier)."""
  seeds = SeedStream(seed)
  features = tf.keras.Input(shape=(feature_dim,), dtype=tf.float32,
                            name="features")
  x = features
  for i, width in enumerate(hidden, start=1):
    x = tf.keras.layers.Dense(int(width), activation="relu",
                              kernel_initializer=seeds.glorot_uniform(),
                              name=f"fc{i}")(x)
  logits = tf.keras.layers.Dense(outputs,
                                 kernel_initializer=seeds.glorot_uniform(),
                                 dtype=tf.float32, name=output_name)(x)
  return tf.keras.Model(features, logits, name=name)


# Offsets the domain classifier's initialiser seeds from the zoo model's,
# which is built from the same ModelConfig.seed.
_DOMAIN_SEED_OFFSET = 7919


def feature_layer_field():
  """The --dann_feature_layer field, which dann and cdan share."""
  return dataclasses.field(
      default="",
      metadata={"help": "The encoder layer the domain classifier reads "
                        "(through the gradient reversal), e.g. flatten "
                        "(after the convolutions, as in the paper); empty: "
                        "the encoder output (dann, cdan)."})


def build_domain_classifier(feature_dim: int, hidden: Sequence[int],
                            seed: int) -> tf.keras.Model:
  """features -> ReLU MLP -> one logit (positive: target domain)."""
  return build_adversary_mlp(feature_dim, hidden, 1, seed + _DOMAIN_SEED_OFFSET,
                             "domain_logit", "domain_classifier")


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


def epoch_order(n_source: int, n_target: int, batch: int, steps: int,
                epoch_seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """An epoch's source permutation and steps * batch target indices (a
  chain of fresh permutations), from the epoch's seed."""
  rng = np.random.default_rng(epoch_seed)
  source = rng.permutation(n_source)
  needed = steps * batch
  target = np.concatenate([rng.permutation(n_target)
                           for _ in range(math.ceil(needed / n_target))])
  return source, target[:needed]


def _train_step_fn(model: tf.keras.Model, adversary: Adversary,
                   optimizer: tf.keras.optimizers.Optimizer,
                   loss_fn: Callable[..., tf.Tensor]) -> Callable[..., Tuple]:
  """The compiled step: (source images, labels, target images, lambda) ->
  class loss, adversary loss, correct labels, adversary count."""
  head = model.get_layer("head")
  variables = model.trainable_variables + adversary.trainable_variables()

  # The last, shorter batch of an epoch traces once more; no further.
  @tf.function(reduce_retracing=True)
  def train_step(images_s, labels_s, images_t, lambda_):
    n_s = tf.shape(images_s)[0]
    with tf.GradientTape() as tape:
      # One encoder pass over both domains: normalization layers (if any)
      # then see the mixed batch, as in the paper's implementation.
      adversary_features, features = adversary.tap(
          tf.concat([images_s, images_t], 0), training=True)
      logits = head(features, training=True)
      class_loss = loss_fn(labels_s, logits[:n_s])
      adversary_loss, count = adversary.loss(adversary_features, logits, n_s,
                                             lambda_)
      loss = class_loss + adversary_loss
      if model.losses:
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits[:n_s], -1), labels_s), tf.float32))
    return class_loss, adversary_loss, correct, count

  return train_step


def _optimizer(train_config: TrainConfig, schedule: AdversarialSchedule,
               steps_per_epoch: int) -> tf.keras.optimizers.Optimizer:
  optimizer = build_optimizer(train_config.optimizer, steps_per_epoch,
                              train_config.epochs)
  if schedule.dann_anneal_lr:
    # AdaptConfig.validate made sure no other schedule is asked for. A
    # schedule may replace a schedule on Keras optimizers (not a float).
    optimizer.learning_rate = AnnealedLearningRate(
        train_config.optimizer.learning_rate,
        steps_per_epoch * train_config.epochs, schedule.dann_alpha,
        schedule.dann_beta)
  return optimizer


def _epoch_fn(train_step, data, batch: int, steps_per_epoch: int,
              total_steps: int, schedule: AdversarialSchedule,
              adversary: Adversary) -> Callable[[int, int], Dict[str, float]]:
  x_source, y_source, x_target = data

  def run_epoch(epoch: int, seed: int) -> Dict[str, float]:
    order_s, order_t = epoch_order(len(y_source), len(x_target), batch,
                                   steps_per_epoch, seed)
    sums = np.zeros(4)
    lambda_ = 0.0
    for step in range(steps_per_epoch):
      idx_s = order_s[step * batch:(step + 1) * batch]
      # As many target images as source ones, also in the last batch.
      idx_t = order_t[step * batch:step * batch + len(idx_s)]
      progress = ((epoch - 1) * steps_per_epoch + step) / max(total_steps, 1)
      lambda_ = dann_lambda(progress, schedule.dann_gamma, adversary.weight)
      out = train_step(tf.constant(x_source[idx_s]),
                       tf.constant(y_source[idx_s]),
                       tf.constant(x_target[idx_t]),
                       tf.constant(lambda_, tf.float32))
      sums += [float(out[0]) * len(idx_s), float(out[1]) * 2 * len(idx_s),
               float(out[2]), float(out[3])]
    return {"train_loss": sums[0] / len(y_source),
            "train_accuracy": sums[2] / len(y_source),
            "domain_loss": sums[1] / (2 * len(y_source)),
            adversary.metric: sums[3] / (2 * len(y_source)),
            "lambda": lambda_}

  return run_epoch


def training_data(task: AdaptationTask, method: str):
  """(normalizations, (standardized source images, source labels,
  standardized target images)): what every two-domain method trains on."""
  normalizations = task.normalizations()
  pair = task.pair
  x_source = normalizations.source.apply(pair.source.x_train).astype(
      np.float32)
  y_source = pair.source.y_train.astype(np.int64)
  x_target = normalizations.target.apply(pair.target.x_train).astype(
      np.float32)
  if not len(y_source) or not len(x_target):
    raise UserError(f"{method} needs source and target training images")
  return normalizations, (x_source, y_source, x_target)


def train_adversarially(task: AdaptationTask, method: str,
                        schedule: AdversarialSchedule,
                        model: tf.keras.Model,
                        adversary: Adversary) -> AdaptationResult:
  """Trains `model` (the zoo classifier whose encoder `adversary.tap`
  shares) jointly with the adversary; `method` names the checkpoint
  folder and log prefix. Returns the last epoch's model."""
  train_config = task.config.train
  normalizations, data = training_data(task, method)
  n_source = len(data[1])
  batch = min(train_config.batch_size, n_source)
  steps_per_epoch = math.ceil(n_source / batch)
  optimizer = _optimizer(train_config, schedule, steps_per_epoch)
  driver = EpochDriver(
      EpochDriverConfig(
          epochs=train_config.epochs, seed=train_config.seed,
          seed_offset=DANN_SEED_OFFSET,
          checkpoint_dir=task.checkpoint_subdir(method),
          checkpoint_every=train_config.checkpoint_every, resume=task.resume,
          stage="training", log_prefix=f"{method}: ",
          log_metrics=("train_loss", "train_accuracy", "domain_loss",
                       adversary.metric, "lambda", "target_test_accuracy"),
          divergence_hint=f"lower the learning rate or --{method}_weight",
          examples_per_epoch=2 * n_source, setting=task.setting),
      {"model": model, **adversary.models, "optimizer": optimizer})
  run_epoch = _epoch_fn(
      _train_step_fn(model, adversary, optimizer, classification_loss(
          task.pair.num_classes, train_config.label_smoothing)),
      data, batch, steps_per_epoch, steps_per_epoch * train_config.epochs,
      schedule, adversary)
  run = driver.run(run_epoch, target_curve(task, model, normalizations),
                   None, optimizer, task.recorder,
                   run_tensorboard_dir(task.recorder))
  # Resumed after training had finished: the last epoch's row, as logged.
  last = last_epoch_metrics(run.history, run.epochs_run, task.recorder,
                            driver.config.metric_prefix)
  details = {"epoch": EPOCH_DEFINITION, "steps_per_epoch": steps_per_epoch,
             "adversary_parameters": int(sum(
                 m.count_params() for m in adversary.models.values()))}
  if last:
    details.update({f"final_{adversary.metric}": last[adversary.metric],
                    "final_domain_loss": last["domain_loss"],
                    "final_lambda": last["lambda"]})
  return AdaptationResult(model, normalizations, run.epochs_run,
                          run.train_seconds, run.examples_per_second, details)


def target_curve(task: AdaptationTask, model: tf.keras.Model,
                  normalizations) -> Callable[[int], Dict[str, float]]:
  """Every `eval_every` epochs the target test accuracy: a learning curve
  in the log, never used to select or stop."""
  config = task.config
  target_test = (task.pair.target.x_test, task.pair.target.y_test)

  def evaluate(epoch: int) -> Dict[str, float]:
    if not config.eval_every or epoch % config.eval_every:
      return {}
    report = evaluate_classifier(model, target_test, normalizations.target,
                                 task.pair.num_classes,
                                 batch_size=config.train.eval_batch_size)
    return {"target_test_accuracy": report["accuracy"]}

  return evaluate
