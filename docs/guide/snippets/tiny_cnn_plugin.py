"""A model plugin: `--plugin=docs.guide.snippets.tiny_cnn_plugin
--model=tiny_cnn` trains it with any fedclf binary (chapter 4)."""

import tensorflow as tf

from fedclf.models.building_blocks import ModelParts
from fedclf.registry import MODELS


@MODELS.register("tiny_cnn")
def build_tiny_cnn(input_shape, num_classes, config) -> ModelParts:
  del config  # no options: norm, dropout and width are not used
  inputs = tf.keras.Input(input_shape)
  x = tf.keras.layers.Conv2D(16, 3, activation="relu")(inputs)
  x = tf.keras.layers.MaxPool2D()(x)
  x = tf.keras.layers.Conv2D(32, 3, activation="relu")(x)
  x = tf.keras.layers.MaxPool2D()(x)
  features = tf.keras.layers.Flatten()(x)
  encoder = tf.keras.Model(inputs, features, name="encoder")
  feature_dim = int(features.shape[-1])
  head = tf.keras.Sequential([tf.keras.Input((feature_dim,)),
                              tf.keras.layers.Dense(num_classes)], name="head")
  return ModelParts(encoder, head, feature_dim=feature_dim)
