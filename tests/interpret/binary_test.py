"""The interpretation binary on tiny trained runs (centralized and a
federated one to compare with), and bad input giving one error line."""

import json
import os
import shutil

import pytest

from fedclf.errors import UserError
from fedclf.interpret import InterpretConfig
from fedclf.interpret import run_interpret

from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands
from tests.export.tiny_runs import centralized_run
from tests.export.tiny_runs import federated_run


def test_interpret_binary_and_a_refused_method(tmp_path, tmp_path_factory):
  # One process answers both command lines (tests/binary_batch.py). (No
  # "error" in the test name: the --overwrite warning names tmp_path.)
  centralized = centralized_run(tmp_path_factory)
  federated = federated_run(tmp_path_factory)
  out = tmp_path / "interpret"
  used = tmp_path / "used" / "interpret"
  used.mkdir(parents=True)
  (used / "summary.json").write_text("{}")
  proc, refused = run_commands("fedclf.interpret", [
      [f"--run_dir={centralized}", "--name=central",
       f"--compare_run_dir={federated}", "--compare_name=fed",
       "--examples=2", "--misclassified=2", "--ig_steps=32",
       "--ig_tolerance=0.05", "--smoothgrad_samples=2",
       "--randomization_examples=2",
       f"--architecture={shutil.which('dot') is not None}",
       f"--out_dir={out}"],
      ["--run_dir=/nonexistent", "--methods=lime", "--overwrite",
       f"--out_dir={used}"]])
  check_interpretation(proc, out)
  assert_one_error_line(
      refused, "unknown attribution method 'lime'; choose from: gradient")
  # The claim on --out_dir comes before main: --overwrite moved the
  # interpretation already there aside.
  aside = [n for n in os.listdir(used.parent)
           if n.startswith("interpret.old-")]
  assert len(aside) == 1
  assert (used.parent / aside[0] / "summary.json").exists()


def check_interpretation(proc, out):
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "central: integrated gradients completeness" in proc.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["gradcam_layer"] == "conv2"
  assert len(summary["misclassified_examples"]) == 2
  for name in summary["files"]:
    assert (out / name).stat().st_size > 0, name
  for name in ("attributions.png", "randomization.png", "compare.png",
               "filters.png", "activations.png"):
    assert name in summary["files"]
  ig = json.loads((out / "ig_completeness.json").read_text())
  assert set(ig) == {"baseline", "central", "fed"}
  assert len(ig["central"]["relative_errors"]) == 4
  randomization = json.loads((out / "randomization.json").read_text())
  assert randomization["steps"] == ["logits", "fc", "conv2", "conv1"]
  assert set(randomization["methods"]) == {
      "gradient", "smoothgrad", "integrated_gradients", "grad_cam"}
  compare = json.loads((out / "compare.json").read_text())
  assert set(compare["models"]) == {"central", "fed"}
  assert -1.0 <= compare["similarity"]["gradient"]["spearman_abs"] <= 1.0


def test_library_refuses_a_used_out_dir_before_loading(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(UserError, match="already holds an interpretation "
                     r"\(config.json\); pass --overwrite"):
    run_interpret(InterpretConfig(run_dir="/nonexistent",
                                  architecture=False), str(tmp_path), {})
