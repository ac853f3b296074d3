"""--init_encoder / --freeze_encoder / --standardize_encoder_features on the
three training binaries: a tiny run starts from a finished run's encoder
(frozen: it ends with exactly that encoder), config.json records the
source, summary.json the feature statistics, and every refusal is one error
line with exit status 2."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

# Registers FeatureStandardization, which a standardized head's model.keras
# needs to load (as any custom Keras layer does).
import fedclf.models  # pylint: disable=unused-import

from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
DIGITS = ["--dataset=digits", "--model=mlp", "--train_limit=400",
          "--test_limit=100"]


def encoder_weights(run_dir):
  model = tf.keras.models.load_model(os.path.join(run_dir, "model.keras"),
                                     compile=False)
  return model.get_layer("encoder").get_weights()


def assert_same(a, b, **tolerance):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, **tolerance)


def recorded_source(run_dir):
  with open(os.path.join(run_dir, "config.json")) as f:
    record = json.load(f)["config"]["init_encoder"]
  with open(os.path.join(run_dir, "summary.json")) as f:
    assert json.load(f)["init_encoder"] == record
  return record


def standardized_examples(run_dir):
  """How many images the head's feature statistics were taken over."""
  with open(os.path.join(run_dir, "summary.json")) as f:
    return json.load(f)["feature_standardization"]["examples"]


def test_centralized(tmp_path):
  src, frozen, tuned, std = (str(tmp_path / n)
                             for n in ("src", "frozen", "tuned", "std"))
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  (unfinished / "config.json").write_text("{}")
  answers = run_commands("baselines.centralized", [
      [*DIGITS, "--epochs=1", f"--out_dir={src}"],
      [*DIGITS, "--epochs=1", f"--init_encoder={src}", "--freeze_encoder",
       f"--out_dir={frozen}"],
      [*DIGITS, "--epochs=1", f"--init_encoder={src}", f"--out_dir={tuned}"],
      [*DIGITS, f"--init_encoder={tmp_path / 'nope'}",
       f"--out_dir={tmp_path / 'r1'}"],
      [*DIGITS, f"--init_encoder={unfinished}", f"--out_dir={tmp_path / 'r2'}"],
      ["--dataset=digits", "--model=cnn", f"--init_encoder={src}",
       f"--out_dir={tmp_path / 'r3'}"],
      [*DIGITS, "--image_size=16", f"--init_encoder={src}",
       f"--out_dir={tmp_path / 'r4'}"],
      [*DIGITS, "--freeze_encoder", f"--out_dir={tmp_path / 'r5'}"],
      [*DIGITS, "--standardize_encoder_features",
       f"--out_dir={tmp_path / 'r6'}"],
      [*DIGITS, "--epochs=1", f"--init_encoder={src}",
       "--standardize_encoder_features", f"--out_dir={std}"]])
  for proc in answers[:3] + answers[-1:]:
    assert proc.returncode == 0, proc.stderr[-2000:]
  source = encoder_weights(src)
  assert_same(encoder_weights(frozen), source, rtol=0, atol=0)
  assert not np.allclose(encoder_weights(tuned)[0], source[0])
  record = recorded_source(frozen)
  assert record["kind"] == "centralized" and record["frozen"]
  assert record["run_dir"] == os.path.abspath(src)
  assert "git_commit" in record and record["input_shape"] == [8, 8, 1]
  # The training split: digits' 400 examples less the 10% validation.
  assert standardized_examples(std) == 360
  for proc, message in zip(answers[3:-1], [
      "does not exist", "summary.json not found", "model mlp != cnn",
      "input shape (8, 8, 1) != (16, 16, 1)",
      "--freeze_encoder needs --init_encoder=RUN_DIR",
      "--standardize_encoder_features needs --init_encoder=RUN_DIR"]):
    assert_one_error_line(proc, message)
  for name in ("r1", "r2", "r3", "r4", "r5", "r6"):  # refused before writing
    assert not (tmp_path / name / "config.json").exists()


def test_federated_both_backends(tmp_path):
  src = str(tmp_path / "src")
  run_commands("baselines.centralized",
               [[*DIGITS, "--epochs=1", f"--out_dir={src}"]])
  common = [*DIGITS, "--rounds=2", "--num_clients=4", "--clients_per_round=2",
            f"--init_encoder={src}"]
  local, tff, ssl, other = run_commands("simulations.federated", [
      [*common, "--freeze_encoder", f"--out_dir={tmp_path / 'local'}"],
      [*common, "--freeze_encoder", "--backend=tff",
       "--standardize_encoder_features", f"--out_dir={tmp_path / 'tff'}"],
      [*common, "--objective=simclr", f"--out_dir={tmp_path / 'r1'}"],
      [*common, "--model=cnn", f"--out_dir={tmp_path / 'r2'}"]])
  source = encoder_weights(src)
  for proc, name in ((local, "local"), (tff, "tff")):
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Not trained; aggregated as non-trainable state: equal up to rounding.
    assert_same(encoder_weights(tmp_path / name), source, rtol=1e-6,
                atol=1e-7)
    assert recorded_source(tmp_path / name)["kind"] == "centralized"
  with open(tmp_path / "tff" / "summary.json") as f:
    assert json.load(f)["feature_standardization"]["image_sets"] == 4
  assert_one_error_line(ssl, "does not apply to --objective=simclr")
  assert_one_error_line(other, "model mlp != cnn")


@pytest.mark.skipif(not os.path.isdir(os.path.join(REAL_DATA, "usps")),
                    reason="FEDCLF_DATA_DIR with the real files is not set")
def test_domain_adaptation(tmp_path):
  src = str(tmp_path / "src")
  run_commands("baselines.centralized", [[
      "--dataset=usps", "--image_size=28", "--model=mlp", "--train_limit=300",
      "--test_limit=100", "--epochs=1", f"--out_dir={src}"]])
  common = ["--source=usps", "--target=mnist", "--model=mlp",
            "--train_limit=300", "--test_limit=100", "--epochs=1",
            f"--init_encoder={src}"]
  frozen, small, federated = run_commands("simulations.domain_adaptation", [
      [*common, "--method=source_only", "--freeze_encoder",
       "--standardize_encoder_features", f"--out_dir={tmp_path / 'frozen'}"],
      [*common, "--image_size=16", f"--out_dir={tmp_path / 'r1'}"],
      [*common, "--mode=federated", f"--out_dir={tmp_path / 'r2'}"]])
  assert frozen.returncode == 0, frozen.stderr[-2000:]
  assert_same(encoder_weights(tmp_path / "frozen"), encoder_weights(src),
              rtol=0, atol=0)
  assert recorded_source(tmp_path / "frozen")["frozen"]
  assert standardized_examples(tmp_path / "frozen") == 300  # usps images
  assert_one_error_line(small, "input shape (28, 28, 1) != (16, 16, 1)")
  assert_one_error_line(federated, "apply to --mode=centralized only")
