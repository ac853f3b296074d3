r"""Candidate kernels for training K clients' local steps as one computation.

  python -m benchmarks.batched_kernels [--clients=10] [--batch=10]
      [--seconds=3] [--models=cnn,mlp]

For the McMahan CNN and the 2NN MLP on 28x28x1 inputs, one SGD step
(forward, backward, update) of K clients with B examples each, done as
  replicas   K Keras model replicas in one tf.function (today's `local`
             backend: TensorFlow's executor runs them concurrently);
  grouped    weights stacked on a client axis; dense layers as batched
             matmuls; convolutions as one grouped convolution with the
             clients folded into the channels, activations kept folded up
             to the flatten (what the batched backend runs);
  unfolded   as grouped, but each convolution's output transposed back to
             [K, B, H, W, C] (and the pools run per example);
  im2col     as unfolded, but each convolution as patches (shifted slices)
             times the stacked kernels in one batched matmul;
  vmap       as grouped, but each convolution as `tf.vectorized_map` of
             `tf.nn.conv2d` over the client axis;
  xla        grouped, the step compiled by XLA (jit_compile), which would
             fuse the update's elementwise ops;
against one model's single-graph step at batch 256, measured alternately
in this process (`--repeats` times each); prints the fastest repeat's
examples/s of each and their ratio (on a shared machine the fastest is
the least disturbed).
"""

import time

from absl import app
from absl import flags
import tensorflow as tf

from fedclf.models import build_classifier
from fedclf.models import stacked

flags.DEFINE_integer("clients", 10, "K: clients per batched step.")
flags.DEFINE_integer("batch", 10, "B: examples per client and step.")
flags.DEFINE_float("seconds", 1.0, "Time per measurement.")
flags.DEFINE_integer("repeats", 3, "Alternating measurements of each.")
flags.DEFINE_list("models", ["cnn", "mlp"], "Models to measure.")
flags.DEFINE_list("candidates",
                  ["replicas", "grouped", "unfolded", "im2col", "vmap"],
                  "Candidates to measure.")
FLAGS = flags.FLAGS

SHAPE = (28, 28, 1)
LR = 0.01


def rate(step, examples: int, seconds: float) -> float:
  """Examples/s of `step()` over `seconds` (after a warm-up call)."""
  step()
  start, calls = time.perf_counter(), 0
  while time.perf_counter() - start < seconds:
    step()
    calls += 1
  return calls * examples / (time.perf_counter() - start)


def single_step(name: str, batch: int):
  """One model's SGD step at `batch`, compiled."""
  model = build_classifier(name, SHAPE, 10)
  x = tf.random.normal([batch, *SHAPE])
  y = tf.random.uniform([batch], 0, 10, tf.int64)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
          y, model(x, training=True), from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
      v.assign_sub(LR * g)
  return step


def replicas_step(name: str, clients: int, batch: int):
  """K replicas, each its own B-example step, in one tf.function."""
  models = [build_classifier(name, SHAPE, 10) for _ in range(clients)]
  x = tf.random.normal([clients, batch, *SHAPE])
  y = tf.random.uniform([clients, batch], 0, 10, tf.int64)

  @tf.function
  def step():
    for k, model in enumerate(models):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(
                y[k], model(x[k], training=True), from_logits=True))
      grads = tape.gradient(loss, model.trainable_variables)
      for v, g in zip(model.trainable_variables, grads):
        v.assign_sub(LR * g)
  return step


def vmap_conv(x, kernel, strides, padding):
  """Per-client convolution as a vectorized map over the client axis."""
  return tf.vectorized_map(
      lambda args: tf.nn.conv2d(args[0], args[1], strides, padding),
      (x, kernel))


def stacked_step(name: str, clients: int, batch: int, conv: str):
  """K clients' steps on stacked weights, convolutions done by `conv`."""
  model = build_classifier(name, SHAPE, 10)
  plan = stacked.plan_for(model)
  weights = [tf.Variable(tf.stack([w] * clients))
             for w in model.trainable_variables]
  x = tf.random.normal([clients, batch, *SHAPE])
  y = tf.random.uniform([clients, batch], 0, 10, tf.int64)
  convolve = {"grouped": None, "unfolded": stacked.grouped_conv,
              "im2col": stacked.im2col_conv, "vmap": vmap_conv,
              "xla": None}[conv]

  @tf.function(jit_compile=conv == "xla")
  def step():
    with tf.GradientTape() as tape:
      logits = stacked.forward(plan, weights, x, convolve)
      loss = tf.reduce_sum(tf.reduce_mean(
          tf.keras.losses.sparse_categorical_crossentropy(
              y, logits, from_logits=True), axis=1))
    grads = tape.gradient(loss, weights)
    for v, g in zip(weights, grads):
      v.assign_sub(LR * g)
  return step


def candidate_step(name: str, candidate: str, clients: int, batch: int):
  if candidate == "replicas":
    return replicas_step(name, clients, batch)
  return stacked_step(name, clients, batch, candidate)


def main(argv):
  del argv
  k, b, s = FLAGS.clients, FLAGS.batch, FLAGS.seconds
  print(f"K={k} clients x B={b}; examples/s (ratio to batch 256, measured "
        "just before)")
  for name in FLAGS.models:
    single = single_step(name, 256)
    for candidate in FLAGS.candidates:
      if name == "mlp" and candidate in ("unfolded", "im2col", "vmap"):
        continue  # no convolution: the same computation as `grouped`
      try:
        step = candidate_step(name, candidate, k, b)
        got, big = [], []
        for _ in range(FLAGS.repeats):
          big.append(rate(single, 256, s))
          got.append(rate(step, k * b, s))
      except (tf.errors.OpError, ValueError) as e:
        print(f"{name:5s} {candidate:9s} failed: "
              f"{str(e).splitlines()[0][:100]}")
        continue
      print(f"{name:5s} {candidate:9s} {max(got):8.0f}  batch-256 "
            f"{max(big):8.0f}  ratio {max(got) / max(big):.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
