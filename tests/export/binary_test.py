"""The export binary: one small export end to end, and bad input giving
one error line and exit status 2."""

import json
import os
import subprocess
import sys

from tests.export.tiny_runs import train_centralized

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def run_binary(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "fedclf.export", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def test_export_binary(tmp_path):
  run_dir = train_centralized(str(tmp_path / "run"))
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
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if "error" in l]
  assert len(errors) == 1, proc.stderr[-1000:]
  assert "run directory /nonexistent does not exist" in errors[0]
  assert "Traceback" not in proc.stderr
