"""Graphs: tf.function traces Python once per input signature into a
TensorFlow graph, which then runs without the Python interpreter."""

import time

import tensorflow as tf

from fedclf.models import build_classifier

model = build_classifier("cnn", (28, 28, 1), 10)
optimizer = tf.keras.optimizers.SGD(0.01)
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
traces = []


def step(images, labels):
  traces.append(images.shape)  # Python side effect: runs only when tracing
  with tf.GradientTape() as tape:
    loss = loss_fn(labels, model(images, training=True))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
  return loss


graph_step = tf.function(step)
images = tf.random.stateless_uniform([64, 28, 28, 1], seed=[0, 1])
labels = tf.random.stateless_uniform([64], seed=[0, 2], maxval=10,
                                     dtype=tf.int64)

for name, fn in (("eager", step), ("tf.function", graph_step)):
  fn(images, labels)  # warm-up (and, for tf.function, the trace)
  start = time.perf_counter()
  for _ in range(20):
    fn(images, labels)
  print(f"{name:12s} {1000 * (time.perf_counter() - start) / 20:6.1f} ms/step")

traces.clear()
fresh = tf.function(step)
fresh(images, labels)  # first call: traced
fresh(images[:32], labels[:32])  # a new shape: traced again
fresh(images[:32], labels[:32])  # same shape: the graph is reused
print("calls with batch 64, 32, 32 traced for:", [t[0] for t in traces])

graph = graph_step.get_concrete_function(images, labels).graph
print("operations in the traced training-step graph:",
      len(graph.get_operations()))


@tf.function
def count_down(n):
  # AutoGraph turns this Python while loop on a tensor into tf.while_loop.
  while n > 0:
    n -= 1
  return n


print("AutoGraph while loop:", int(count_down(tf.constant(5))),
      "| ops:", sorted({op.type for op in count_down.get_concrete_function(
          tf.constant(5)).graph.get_operations()} & {"While", "StatelessWhile"}))
