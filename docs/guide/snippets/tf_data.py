"""tf.data as fedclf uses it: in-memory arrays -> shuffled, augmented,
normalized, prefetched batches, fixed by a seed."""

import numpy as np
import tensorflow as tf

from fedclf.data import DataConfig, load_dataset
from fedclf.data.preprocess import AugmentConfig, Normalization, make_pipeline

ds = load_dataset(DataConfig("mnist", train_limit=2048, seed=0))
print("images", ds.x_train.shape, ds.x_train.dtype, "labels", ds.y_train.shape)

# The plain building blocks: slices -> shuffle -> batch -> prefetch.
plain = (tf.data.Dataset.from_tensor_slices((ds.x_train, ds.y_train))
         .shuffle(1024, seed=0).batch(64).prefetch(tf.data.AUTOTUNE))
print("plain pipeline:", plain.element_spec)
print("batches per epoch:", plain.cardinality().numpy())

# fedclf's pipeline adds per-example seeded augmentation and normalization
# with the training set's statistics (chapter 3).
norm = Normalization.from_images(ds.x_train)
augment = AugmentConfig.from_names(["crop", "rotate"])
pipeline = make_pipeline(ds.x_train, ds.y_train, 64, norm, shuffle=True,
                         seed=1, augment=augment)
images, labels = next(iter(pipeline))
print(f"normalized batch: {images.shape}, mean {images.numpy().mean():+.3f}, "
      f"std {images.numpy().std():.3f}; labels {labels.numpy()[:8]}")

# The order and the augmentations depend on the seed alone, so a resumed
# run sees exactly the batches of an uninterrupted one.
again = next(iter(make_pipeline(ds.x_train, ds.y_train, 64, norm,
                                shuffle=True, seed=1, augment=augment)))[0]
other = next(iter(make_pipeline(ds.x_train, ds.y_train, 64, norm,
                                shuffle=True, seed=2, augment=augment)))[0]
print("same seed, same batch:", bool(np.array_equal(images, again)))
print("other seed, same batch:", bool(np.array_equal(images, other)))
