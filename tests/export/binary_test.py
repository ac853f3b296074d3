"""The export binary: one small export end to end, bad input giving one
error line and exit status 2, and its claim on <out_dir>/<model_name>."""

import json
import os

from absl import flags
import pytest

from fedclf import cli
from fedclf.errors import UserError
from fedclf.export import ExportConfig
from fedclf.export import run_export
from fedclf.export import write_table

from tests.export.tiny_runs import centralized_run
from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands


def test_export_binary_and_a_refused_export(tmp_path, tmp_path_factory):
  # One process answers both command lines (tests/binary_batch.py). (No
  # "error" in the test name: the --overwrite warning names tmp_path.)
  run_dir = centralized_run(tmp_path_factory)
  claims = tmp_path / "claims"
  _write_export(claims, "m")
  _write_export(claims, "other")
  proc, refused = run_commands("fedclf.export", [
      [f"--run_dir={run_dir}", "--model_name=tiny",
       f"--export_dir={tmp_path / 'exports'}",
       "--formats=saved_model,tflite", "--representative_examples=50",
       f"--out_dir={tmp_path / 'results'}"],
      ["--run_dir=/nonexistent", "--model_name=m", "--overwrite",
       f"--out_dir={claims}"]])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "TFLite int8" in proc.stdout
  assert (tmp_path / "exports" / "tiny" / "1" / "saved_model.pb").exists()
  summary = json.loads((tmp_path / "results" / "tiny" /
                        "summary.json").read_text())
  assert summary["version"] == 1 and "tfjs" not in summary
  assert summary["saved_model"]["matches_keras"]

  assert_one_error_line(refused,
                        "run directory /nonexistent does not exist")
  # --overwrite moved only <out_dir>/<model_name> aside, before main; the
  # other model's results stay.
  aside = [n for n in os.listdir(claims) if n.startswith("m.old-")]
  assert len(aside) == 1 and not (claims / "m").exists()
  assert (claims / aside[0] / "summary.json").exists()
  assert (claims / "other" / "summary.json").exists()


def _summary(name):
  """The fields of an export's summary.json that table.md shows."""
  return {"model_name": name, "run_kind": "centralized", "version": 1,
          "test_examples": 10, "keras_test_accuracy": 0.9,
          "saved_model": {"test_accuracy": 0.9,
                          "top1_agreement_with_keras": 1.0,
                          "max_abs_logit_difference": 0.0},
          "failed_checks": []}


def _write_export(out_dir, name, folder=None):
  os.makedirs(out_dir / (folder or name))
  (out_dir / (folder or name) / "summary.json").write_text(
      json.dumps(_summary(name)))


@pytest.fixture
def export_flags(monkeypatch):
  """The export binary's claim flags, installed as absl's FLAGS."""
  values = flags.FlagValues()
  flags.DEFINE_string("out_dir", "", "", flag_values=values)
  flags.DEFINE_string("model_name", "", "", flag_values=values)
  flags.DEFINE_bool("overwrite", False, "", flag_values=values)
  monkeypatch.setattr(flags, "FLAGS", values)
  monkeypatch.setattr(cli, "_out_dir_entry_flag", "model_name")

  def parse(*args):
    values.unparse_flags()
    values(["export", *args])

  return parse


def test_claim_is_per_model_name(tmp_path, export_flags):
  _write_export(tmp_path, "a")
  export_flags(f"--out_dir={tmp_path}", "--model_name=b")
  with cli.claim_out_dir() as claim:
    assert claim.out_dir == str(tmp_path / "b")
  export_flags(f"--out_dir={tmp_path}", "--model_name=a")
  with pytest.raises(UserError, match=r"already holds a run \(summary.json\)"
                     r"; pass --overwrite"):
    cli.claim_out_dir()
  export_flags(f"--out_dir={tmp_path}", "--model_name=a", "--overwrite")
  with cli.claim_out_dir() as claim:
    assert claim.moved_aside_to.startswith(str(tmp_path / "a.old-"))
  for bad, message in (("", "--model_name is required"),
                       ("..", "must name one folder inside --out_dir"),
                       ("x/y", "must name one folder inside --out_dir")):
    export_flags(f"--out_dir={tmp_path}", f"--model_name={bad}")
    with pytest.raises(UserError, match=message):
      cli.claim_out_dir()


def test_library_refuses_an_existing_export_before_loading(tmp_path):
  _write_export(tmp_path, "a")
  with pytest.raises(UserError, match="already holds an export of a"):
    run_export(ExportConfig(run_dir="/nonexistent", model_name="a"),
               str(tmp_path), {})


def test_table_leaves_out_exports_moved_aside(tmp_path):
  _write_export(tmp_path, "a")
  _write_export(tmp_path, "a", folder="a.old-20250101-000000")
  _write_export(tmp_path, "b")
  table = write_table(str(tmp_path))
  assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
      "| a", "| b"]
  assert sorted(os.listdir(tmp_path)) == [
      "a", "a.old-20250101-000000", "b", "table.md"]
