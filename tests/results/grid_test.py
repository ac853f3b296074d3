"""Experiment grids: spec expansion, errors, and one tiny grid end to end."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from fedclf.errors import UserError
from fedclf.results import grid
from fedclf.results import run_folder
from fedclf.results import tables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def write(tmp_path, text, name="spec.yaml"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_grid_expands_cartesian_product_and_extra_runs(tmp_path):
  spec = grid.load_spec(write(tmp_path, f"""
binary: simulations.federated
out_dir: {tmp_path}/out
common: {{dataset: digits, rounds: 2}}
grid:
  algorithm: [fedavg, fedprox]
  seed: [0, 1]
runs:
  - {{name: extra, algorithm: scaffold}}
"""))
  assert [r.name for r in spec.runs] == [
      "fedavg_seed0", "fedavg_seed1", "fedprox_seed0", "fedprox_seed1",
      "extra"]
  assert spec.runs[2].flags == {"dataset": "digits", "rounds": 2,
                                "algorithm": "fedprox", "seed": 0}
  argv = grid.command(spec, spec.runs[0], python="py")
  assert argv[:3] == ["py", "-m", "simulations.federated"]
  assert f"--out_dir={tmp_path}/out/fedavg_seed0" in argv
  assert "--resume" not in argv
  # A run stopped before its first checkpoint starts afresh (moved aside).
  os.makedirs(tmp_path / "out" / "fedavg_seed0")
  (tmp_path / "out" / "fedavg_seed0" / "config.json").write_text("{}")
  argv = grid.command(spec, spec.runs[0])
  assert "--overwrite" in argv and "--resume" not in argv
  os.makedirs(tmp_path / "out" / "fedavg_seed0" / "checkpoints")
  argv = grid.command(spec, spec.runs[0])
  assert "--resume" in argv and "--overwrite" not in argv
  # Seeds of one setting share one setting name, their names' common part.
  assert grid.setting_labels(spec.runs) == {
      "fedavg_seed0": "fedavg", "fedavg_seed1": "fedavg",
      "fedprox_seed0": "fedprox", "fedprox_seed1": "fedprox",
      "extra": "extra"}
  assert grid.setting_labels([grid.RunSpec("x", {"seed": 0}),
                              grid.RunSpec("x_seed1", {"seed": 1})]) == {
                                  "x": "x", "x_seed1": "x"}


@pytest.mark.parametrize("text,message", [
    ("binary: nope\nout_dir: x\nruns: [{name: a}]", "binary must be one of"),
    ("binary: baselines.centralized\nruns: [{name: a}]", "out_dir is required"),
    ("binary: baselines.centralized\nout_dir: x", "defines no runs"),
    ("binary: baselines.centralized\nout_dir: x\ngrid: {seed: []}",
     "non-empty list"),
    ("binary: baselines.centralized\nout_dir: x\nruns: [{name: a}, {name: a}]",
     "occurs twice"),
    ("binary: baselines.centralized\nout_dir: x\nbogus: 1", "unknown spec key"),
    ("binary: [unclosed", "cannot parse"),
])
def test_bad_specs_are_one_line_user_errors(tmp_path, text, message):
  with pytest.raises(UserError, match=message):
    grid.load_spec(write(tmp_path, text))


def test_csv_spec(tmp_path):
  spec = grid.load_spec(write(
      tmp_path, "binary,out_dir,name,epochs\n"
      f"baselines.centralized,{tmp_path},a,1\n"
      f"baselines.centralized,{tmp_path},b,2\n", "spec.csv"))
  assert [(r.name, r.flags) for r in spec.runs] == [
      ("a", {"epochs": "1"}), ("b", {"epochs": "2"})]


def test_tiny_grid_runs_resumes_and_renders(tmp_path):
  out = tmp_path / "out"
  path = write(tmp_path, f"""
binary: simulations.federated
out_dir: {out}
common: {{dataset: digits, model: mlp, num_clients: 6, clients_per_round: 3,
          rounds: 2, per_client_eval: 4, target_accuracy: 0.2}}
grid:
  algorithm: [fedavg, fedsgd]
  seed: [0, 1]
table: {{title: tiny grid, published: [{{source: a paper, measure: best,
                                        values: {{fedavg: [0.5, 0.01]}}}}]}}
""")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "simulations.reproduce",
                         f"--spec={path}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-2000:]
  readme = (out / "README.md").read_text()
  # Rows are named by the spec's setting names, seeds grouped.
  assert "| fedavg | 2 |" in readme
  assert "±" in readme
  assert "\\pm" in (out / "table.tex").read_text()
  # The published value sits beside ours, FedSGD (none published) left out.
  published = readme.split("## Against published values")[1]
  assert "| fedavg | 2 |" in published and "50.00 ± 1.00" in published
  assert "| fedsgd |" not in published and "[1] a paper" in published
  assert (out / "accuracy.png").stat().st_size > 0
  assert (out / "client_accuracy.png").stat().st_size > 0
  assert "client_accuracy.png" in readme
  clients = json.loads((out / "fedavg_seed0" / "client_accuracy.json")
                       .read_text())
  assert clients["round"] == 2 and len(clients["accuracy"]) == 4
  assert all(0.0 <= a <= 1.0 for a in clients["accuracy"])
  # Analysis written by hand below a `---` line survives regeneration.
  notes = "\n---\n\nWritten by hand: FedSGD lags here.\n"
  (out / "README.md").write_text(readme + notes)
  # A second invocation skips finished runs.
  again = subprocess.run([sys.executable, "-m", "simulations.reproduce",
                          f"--spec={path}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
  assert again.stdout.count("skipped (done)") == 4, again.stdout
  assert (out / "README.md").read_text() == readme + notes
  runs = tables.load_runs(str(out))
  assert {r["name"] for r in runs} == {"fedavg_seed0", "fedavg_seed1",
                                       "fedsgd_seed0", "fedsgd_seed1"}
  summary = json.loads((out / "fedavg_seed0" / "summary.json").read_text())
  assert summary["rounds_run"] == 2
  # A second spec on the same out_dir (a subset of the runs) would render
  # its rows over these: refused before it runs or writes anything.
  subset = write(tmp_path, (tmp_path / "spec.yaml").read_text().replace(
      "algorithm: [fedavg, fedsgd]", "algorithm: [fedavg]"), "subset.yaml")
  before = (out / "README.md").read_text()
  refused = subprocess.run([sys.executable, "-m", "simulations.reproduce",
                            f"--spec={subset}", "--tables_only"], cwd=ROOT,
                           env=env, capture_output=True, text=True,
                           timeout=900)
  assert refused.returncode == 2, refused.stderr[-2000:]
  assert f"holds the tables of {path}" in refused.stderr
  assert "Traceback" not in refused.stderr
  assert (out / "README.md").read_text() == before


def test_hand_written_part(tmp_path):
  readme = tmp_path / "README.md"
  assert tables.hand_written_part(str(readme)) == ""
  readme.write_text("# t\n\n|---|---|\n| a | b |\n")
  assert tables.hand_written_part(str(readme)) == ""
  readme.write_text("# t\n\n|---|\n\n---\n\nnotes\n---\nmore\n")
  assert tables.hand_written_part(str(readme)) == "\n---\n\nnotes\n---\nmore\n"


def test_table_owner_is_the_spec_named_above_the_hand_written_part(
    tmp_path):
  readme = tmp_path / "README.md"
  assert tables.table_owner(str(readme)) is None
  readme.write_text("# t\n\n" + tables.regenerate_line("specs/a.yaml") +
                    "\n---\n\n" + tables.regenerate_line("specs/b.yaml"))
  assert tables.table_owner(str(readme)) == "specs/a.yaml"
  readme.write_text("# t\n\n---\n\n" + tables.regenerate_line("specs/b.yaml"))
  assert tables.table_owner(str(readme)) is None


def test_check_table_owner(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  a, b = write(tmp_path, "a", "a.yaml"), write(tmp_path, "b", "b.yaml")
  tables.check_table_owner(str(out), b)  # no README yet
  (out / "README.md").write_text("# t\n" + tables.regenerate_line(a))
  tables.check_table_owner(str(out), a)
  # The same file by another path is the same owner.
  tables.check_table_owner(str(out), os.path.join(str(tmp_path), ".", "a.yaml"))
  with pytest.raises(UserError, match=f"holds the tables of {a}.*--spec={a}"):
    tables.check_table_owner(str(out), b)
  # An owner that no longer exists (renamed, deleted) claims nothing.
  os.remove(a)
  tables.check_table_owner(str(out), b)


def test_unwritable_out_dir_is_refused_and_failed_runs_fail_the_grid(
    tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(UserError, match="cannot write in the spec's out_dir"):
    grid.check_writable(str(blocker / "runs"))
  grid.check_writable(str(tmp_path / "new"))  # created
  assert grid.failure_report({"a": "ok", "b": "skipped (done)"}) is None
  assert grid.failure_report({"a": "ok", "b": "failed (exit 2)"}) == (
      "1 of 2 runs failed: b (exit 2); fix the cause and rerun the same "
      "command to continue them", 2)
  assert grid.failure_report({"a": "failed (exit 1)",
                              "b": "failed (exit 2)"})[1] == 1


def test_a_run_held_or_finished_by_another_grid_is_not_a_failure(tmp_path):
  # The same grid started twice: each skips what the other runs.
  spec = grid.load_spec(write(tmp_path, f"""
binary: baselines.centralized
out_dir: {tmp_path}/out
grid: {{seed: [0, 1, 2]}}
"""))
  held, done, failed = spec.runs
  outcome = grid._outcome  # pylint: disable=protected-access
  assert outcome(spec, held, 0) == "ok"
  with run_folder.claim_run_folder(str(tmp_path / "out" / held.name),
                                   {"seed": 0}, resume=False,
                                   overwrite=False):
    assert outcome(spec, held, 2) == (
        "skipped (running in another process)")
  (tmp_path / "out" / done.name).mkdir()
  (tmp_path / "out" / done.name / "summary.json").write_text("{}")
  assert outcome(spec, done, 2) == "done (by another process)"
  assert outcome(spec, failed, 2) == "failed (exit 2)"


def test_grid_logs_its_progress_before_and_after_each_run(tmp_path, caplog):
  # A stand-in for python: finishes each run at once, fails seed 1's.
  fake = tmp_path / "fake_python"
  fake.write_text(
      "#!/bin/sh\n"
      "for a in \"$@\"; do case \"$a\" in --out_dir=*) out=\"${a#*=}\";;"
      " esac; done\n"
      "case \"$out\" in *seed1) exit 3;; esac\n"
      "mkdir -p \"$out\" && echo '{}' > \"$out/summary.json\"\n")
  fake.chmod(0o755)
  spec = grid.load_spec(write(tmp_path, f"""
binary: simulations.federated
out_dir: {tmp_path}/out
grid: {{seed: [0, 1, 2, 3]}}
"""))
  finished = tmp_path / "out" / "seed0"
  finished.mkdir(parents=True)
  (finished / "summary.json").write_text("{}")
  caplog.set_level(logging.INFO)
  outcomes = grid.run_grid(spec, python=str(fake))
  assert outcomes["seed1"] == "failed (exit 3)"
  lines = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("grid:")]
  # seed0 was done before: counted done, and no time, so no ETA at first.
  assert lines[0] == "grid: 1/4 done, 1 running, 2 left, ETA ?"
  assert re.fullmatch(r"grid: 2/4 done \(1 failed\), 0 running, 2 left, "
                      r"ETA \d+s", lines[1])
  assert lines[2].startswith("grid: 2/4 done (1 failed), 1 running, 1 left")
  assert lines[-1] == "grid: 4/4 done (1 failed), 0 running, 0 left, ETA 0s"
  assert len(lines) == 6  # before and after each of the three runs
