"""tf.distribute: the same model and step on several replicas. Here the CPU
is split into two logical devices, so it runs anywhere; on a machine with
GPUs, MirroredStrategy() uses them instead."""

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

# pylint: disable=g-import-not-at-top,wrong-import-position
from fedclf.data import DataConfig, load_dataset
from fedclf.data.preprocess import Normalization
from fedclf.models import build_classifier

ds = load_dataset(DataConfig("digits"))
norm = Normalization.from_images(ds.x_train)
strategy = tf.distribute.MirroredStrategy(
    [d.name for d in tf.config.list_logical_devices("CPU")])
print("replicas in sync:", strategy.num_replicas_in_sync)

GLOBAL_BATCH = 64
with strategy.scope():  # variables created here are mirrored on each replica
  model = build_classifier("cnn", ds.input_shape, ds.num_classes)
  optimizer = tf.keras.optimizers.SGD(0.05, momentum=0.9)
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=tf.keras.losses.Reduction.NONE)

batches = tf.data.Dataset.from_tensor_slices(
    (norm.apply(ds.x_train), ds.y_train)).shuffle(
        2048, seed=0).batch(GLOBAL_BATCH, drop_remainder=True)
dist_batches = strategy.experimental_distribute_dataset(batches)


@tf.function
def train_step(images, labels):
  def replica_step(x, y):
    with tf.GradientTape() as tape:
      # Each replica averages over the *global* batch, so the summed
      # gradients equal the single-device gradient.
      loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)),
                                        global_batch_size=GLOBAL_BATCH)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, tf.shape(x)[0]
  losses, sizes = strategy.run(replica_step, args=(images, labels))
  return (strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None),
          strategy.experimental_local_results(sizes))


for epoch in range(1, 4):
  results = [train_step(x, y) for x, y in dist_batches]
  per_replica = [int(s) for s in results[0][1]]
  print(f"epoch {epoch}: {len(results)} global steps, per-replica batch "
        f"{per_replica}, mean loss "
        f"{sum(float(r[0]) for r in results) / len(results):.4f}")
logits = model(norm.apply(ds.x_test), training=False)
print("test accuracy:", round(float(tf.reduce_mean(tf.cast(
    tf.argmax(logits, -1) == ds.y_test, tf.float32))), 4))
