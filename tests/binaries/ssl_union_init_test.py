"""Adaptation from an encoder contrastively pretrained on unlabelled source
+ target images: SimCLR on the `domains:mnist+usps` mixture (both domains'
training images at the adaptation binary's 28x28, one channel), then
`simulations.domain_adaptation --init_encoder` from it."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.binary_batch import run_commands

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")


def load(path):
  return tf.keras.models.load_model(path, compile=False)


@pytest.mark.skipif(
    not all(os.path.isdir(os.path.join(REAL_DATA, d))
            for d in ("mnist", "usps")),
    reason="FEDCLF_DATA_DIR with the real files is not set")
def test_simclr_on_both_domains_then_adapt(tmp_path):
  ssl, adapted = str(tmp_path / "ssl"), str(tmp_path / "fixmatch")
  (pretrained,) = run_commands("simulations.ssl_pretrain", [[
      "--dataset=domains:mnist+usps", "--model=lenet5", "--method=simclr",
      "--train_limit=256", "--test_limit=100", "--epochs=1",
      "--batch_size=64", "--probe_epochs=1", "--label_fractions=",
      "--embedding_points=0", "--retrieval_references=0",
      f"--out_dir={ssl}"]])
  assert pretrained.returncode == 0, pretrained.stderr[-2000:]
  with open(os.path.join(ssl, "summary.json")) as f:
    summary = json.load(f)
  # The mixture's slice holds images of both domains.
  assert "mnist" in json.dumps(summary["dataset"])
  assert "usps" in json.dumps(summary["dataset"])
  (run,) = run_commands("simulations.domain_adaptation", [[
      "--source=mnist", "--target=usps", "--method=fixmatch",
      "--model=lenet5", "--train_limit=128", "--test_limit=100",
      "--epochs=1", "--fixmatch_ratio=1", f"--init_encoder={ssl}",
      "--freeze_encoder", f"--out_dir={adapted}"]])
  assert run.returncode == 0, run.stderr[-2000:]
  assert "fixmatch mnist -> usps: target accuracy" in run.stdout
  with open(os.path.join(adapted, "summary.json")) as f:
    record = json.load(f)["init_encoder"]
  assert record["kind"] == "ssl_pretrain" and record["frozen"]
  # Frozen: the adapted classifier's encoder is the pretrained one.
  adapted_encoder = load(os.path.join(adapted, "model.keras")).get_layer(
      "encoder").get_weights()
  pretrained_encoder = load(os.path.join(ssl, "encoder.keras")).get_weights()
  assert len(adapted_encoder) == len(pretrained_encoder)
  for a, b in zip(adapted_encoder, pretrained_encoder):
    np.testing.assert_array_equal(a, b)
