"""Model pictures: the architecture diagram's missing-graphviz message,
filters and activations of the zoo CNN."""

import numpy as np
import pytest

from fedclf.errors import UserError
from fedclf.interpret import visualize
from fedclf.models import build_classifier


@pytest.fixture(scope="module")
def cnn():
  return build_classifier("cnn", (8, 8, 1), 10)


def test_missing_dot_is_a_one_line_user_error(cnn, tmp_path, monkeypatch):
  monkeypatch.setattr(visualize.shutil, "which", lambda name: None)
  with pytest.raises(UserError, match="apt-get install graphviz") as error:
    visualize.plot_architecture(cnn, str(tmp_path / "a.png"))
  assert "\n" not in str(error.value)
  assert not (tmp_path / "a.png").exists()


def test_filters_and_activations(cnn, tmp_path):
  kernel = visualize.conv_kernel(cnn, "conv1")
  assert kernel.shape == (5, 5, 1, 32)
  visualize.plot_filters(kernel, str(tmp_path / "f.png"), "filters")
  image = np.random.default_rng(0).random((8, 8, 1)).astype(np.float32)
  activations = visualize.layer_activations(cnn, image, ["conv1", "conv2"])
  assert activations["conv1"].shape == (8, 8, 32)
  assert activations["conv2"].shape == (4, 4, 64)
  visualize.plot_activations(activations, image, str(tmp_path / "a.png"),
                             "activations")
  assert (tmp_path / "f.png").stat().st_size > 0
  assert (tmp_path / "a.png").stat().st_size > 0
