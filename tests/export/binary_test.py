"""The export binary: one small export end to end, and bad input giving
one error line and exit status 2."""

import json

from tests.export.tiny_runs import assert_one_error_line
from tests.export.tiny_runs import run_module
from tests.export.tiny_runs import centralized_run


def run_binary(*args):
  return run_module("fedclf.export", *args)


def test_export_binary(tmp_path, tmp_path_factory):
  run_dir = centralized_run(tmp_path_factory)
  proc = run_binary(f"--run_dir={run_dir}", "--model_name=tiny",
                    f"--export_dir={tmp_path / 'exports'}",
                    "--formats=saved_model,tflite",
                    "--representative_examples=50",
                    f"--out_dir={tmp_path / 'results'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "TFLite int8" in proc.stdout
  assert (tmp_path / "exports" / "tiny" / "1" / "saved_model.pb").exists()
  summary = json.loads((tmp_path / "results" / "tiny" /
                        "summary.json").read_text())
  assert summary["version"] == 1 and "tfjs" not in summary
  assert summary["saved_model"]["matches_keras"]


def test_bad_run_dir_is_one_error_line(tmp_path):
  proc = run_binary("--run_dir=/nonexistent", "--model_name=m",
                    f"--out_dir={tmp_path}")
  assert_one_error_line(proc,
                        "run directory /nonexistent does not exist")
