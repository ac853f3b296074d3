"""LP-FT fine-tuning (`FinetuneRecipe`): the head trains alone on the frozen
encoder first, then every layer at the scaled learning rate."""

import numpy as np
import pytest
from sklearn import datasets

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_model_parts
from fedclf.models import ModelConfig
from fedclf.ssl import FinetuneRecipe
from fedclf.ssl.evaluate import _finetune
from fedclf.ssl.evaluate import classifier_from_parts
from fedclf.train import OptimizerConfig
from fedclf.train import TrainConfig


def digits():
  data = datasets.load_digits()
  x = (data.images[:128, :, :, None] / 16.0).astype(np.float32)
  return x, data.target[:128].astype(np.int64)


def weights(model):
  return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize("head_epochs", [0, 2])
def test_head_first_then_all_layers(head_epochs):
  x, y = digits()
  parts = build_model_parts("mlp", (8, 8, 1), 10,
                            ModelConfig(width_multiplier=0.25))
  model = classifier_from_parts(parts)
  encoder_before = weights(parts.encoder)
  head_before = weights(parts.head)
  config = TrainConfig(epochs=1, batch_size=32, checkpoint_every=0,
                       optimizer=OptimizerConfig(name="adam",
                                                 learning_rate=1e-2))
  # An all-layers stage at a vanishing lr leaves what the head stage did.
  _finetune(model, parts, (x, y), Normalization.from_images(x), 10, config,
            FinetuneRecipe(head_epochs=head_epochs, lr_scale=1e-12), None,
            "10")
  assert parts.encoder.trainable  # unfrozen again
  encoder_moved = max(float(np.abs(a - b).max()) for a, b in
                      zip(encoder_before, parts.encoder.get_weights()))
  head_moved = max(float(np.abs(a - b).max()) for a, b in
                   zip(head_before, parts.head.get_weights()))
  assert encoder_moved < 1e-6
  assert (head_moved > 1e-3) == (head_epochs > 0)


@pytest.mark.parametrize("recipe, message", [
    (FinetuneRecipe(head_epochs=-1), "head epochs must be >= 0"),
    (FinetuneRecipe(lr_scale=0.0), "lr scale must be > 0"),
])
def test_bad_recipe_is_refused(recipe, message):
  with pytest.raises(UserError, match=message):
    recipe.validate()
