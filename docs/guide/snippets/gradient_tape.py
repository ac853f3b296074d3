"""Automatic differentiation: one hand-written training step with
tf.GradientTape, the step fedclf's training loop is built around."""

import tensorflow as tf

from fedclf.data import DataConfig, load_dataset
from fedclf.data.preprocess import Normalization, make_pipeline
from fedclf.models import build_classifier

ds = load_dataset(DataConfig("digits"))
norm = Normalization.from_images(ds.x_train)
model = build_classifier("cnn", ds.input_shape, ds.num_classes)
optimizer = tf.keras.optimizers.SGD(0.05, momentum=0.9)
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_step(images, labels):
  with tf.GradientTape() as tape:  # records the forward pass ...
    logits = model(images, training=True)
    loss = loss_fn(labels, logits)
  # ... and plays it backwards: d loss / d every trainable weight.
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
  return loss


first = model.trainable_variables[0]
print(f"{len(model.trainable_variables)} trainable tensors; the first, "
      f"{first.name} {tuple(first.shape)}, gets a gradient of the same shape")
for epoch in range(1, 4):
  batches = make_pipeline(ds.x_train, ds.y_train, 32, norm, shuffle=True,
                          seed=epoch)
  losses = [float(train_step(x, y)) for x, y in batches]
  print(f"epoch {epoch}: {len(losses)} steps, mean loss "
        f"{sum(losses) / len(losses):.4f}")
logits = model(norm.apply(ds.x_test), training=False)
accuracy = float(tf.reduce_mean(tf.cast(
    tf.argmax(logits, -1) == ds.y_test, tf.float32)))
print(f"test accuracy after 3 epochs: {accuracy:.4f}")

# A gradient of anything differentiable, not only a loss: how much does the
# "3" logit change with each input pixel? (Chapter 7's saliency maps.)
image = tf.constant(norm.apply(ds.x_test[:1]))
with tf.GradientTape() as tape:
  tape.watch(image)  # inputs are not variables, so watch them explicitly
  logit = model(image, training=False)[0, 3]
saliency = tape.gradient(logit, image)
print("d logit_3 / d pixels:", tuple(saliency.shape),
      f"max |gradient| {float(tf.reduce_max(tf.abs(saliency))):.4f}")
