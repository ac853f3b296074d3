"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017).

Neither TensorFlow 2.14's Keras nor tensorflow-similarity ships LARS (TF
Model Garden does, but it is not a fedclf dependency), so this is the short
version SimCLR uses (Chen et al. 2020, Appendix B.1): for each weight matrix
or kernel w with gradient g,

    g' = g + weight_decay * w
    trust = eta * ||w|| / ||g'||   (1 where either norm is 0)
    v = momentum * v + lr * trust * g'
    w = w - v

and vectors (biases, normalisation scales and offsets) take the plain
momentum step without weight decay or trust ratio, as SimCLR excludes them.
"""

from __future__ import annotations

import tensorflow as tf


class Lars(tf.keras.optimizers.Optimizer):
  """Momentum SGD with a per-layer trust ratio (see the module docstring).

  Args:
    learning_rate: a float or a LearningRateSchedule.
    momentum: heavy-ball momentum of the velocity.
    weight_decay: L2 coefficient added to the gradient of adapted weights
      (inside the trust ratio, not Keras's decoupled decay).
    eta: the trust coefficient.
    name: the optimizer's name.
  """

  def __init__(self, learning_rate, momentum: float = 0.9,
               weight_decay: float = 0.0, eta: float = 0.001,
               name: str = "LARS"):
    super().__init__(name=name)
    self._learning_rate = self._build_learning_rate(learning_rate)
    self.momentum = momentum
    self.lars_weight_decay = weight_decay
    self.eta = eta

  def build(self, var_list):
    super().build(var_list)
    if getattr(self, "_built", False):
      return
    self._built = True
    self._velocities = [
        self.add_variable_from_reference(v, "velocity") for v in var_list]

  def update_step(self, gradient, variable):
    lr = tf.cast(self.learning_rate, variable.dtype)
    gradient = tf.convert_to_tensor(gradient)
    velocity = self._velocities[self._index_dict[self._var_key(variable)]]
    if variable.shape.rank > 1:  # kernels: decayed and trust-scaled
      gradient += self.lars_weight_decay * variable
      w_norm = tf.norm(variable)
      g_norm = tf.norm(gradient)
      trust = tf.where((w_norm > 0.0) & (g_norm > 0.0),
                       self.eta * w_norm / tf.maximum(g_norm, 1e-30), 1.0)
      gradient *= trust
    velocity.assign(self.momentum * velocity + lr * gradient)
    variable.assign_sub(velocity)

  def get_config(self):
    config = super().get_config()
    config.update({
        "learning_rate": self._serialize_hyperparameter(self._learning_rate),
        "momentum": self.momentum,
        "weight_decay": self.lars_weight_decay,
        "eta": self.eta,
    })
    return config
