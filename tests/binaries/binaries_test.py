"""End-to-end: each binary runs a tiny job into a temp dir; bad input gives a
one-line error and exit status 2."""

import json
import os
import subprocess
import sys

from fedclf.results import tables
from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands
from tests.binary_batch import start_binary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def run(module, *args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


# Bad input: each command line (after --dataset=digits) and a fragment of
# its one error line.
CENTRALIZED_BAD_FLAGS = [
    ("--dataset=nope", "unknown dataset 'nope'; choose one of: cifar10"),
    ("--model=vgg", "unknown model 'vgg'; choose one of: alexnet"),
    ("--epochs=-1", "epochs must be >= 1"),
    ("--train_limit=-5", "train_limit"),
    ("--optimizer=lbfgs", "value should be one of"),
    ("--no_such_flag", "Unknown command line flag"),
    ("--cv_folds=1", "cv_folds"),
    ("--weight_init=xavier", "value should be one of"),
]


def test_centralized_runs_and_answers_bad_input(tmp_path):
  # One process answers every command line (tests/binary_batch.py).
  out = tmp_path / "runs" / "a"
  args = ["--dataset=digits", "--model=mlp", "--epochs=2", "--batch_size=32",
          "--lr=0.05", "--cv_folds=2", "--weight_init=pytorch",
          f"--out_dir={out}"]
  bad = [["--dataset=digits", flag, f"--out_dir={tmp_path / 'bad'}"]
         for flag, _ in CENTRALIZED_BAD_FLAGS]
  first, listing, plugin, offline, *refused = run_commands(
      "baselines.centralized", [
          args, ["--list"],
          ["--plugin=no_such_plugin_mod", "--list"],
          ["--dataset=usps", f"--data_dir={tmp_path}", "--nodownload",
           f"--out_dir={tmp_path / 'offline'}"], *bad])

  assert first.returncode == 0, first.stderr[-2000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["test_accuracy"] > 0.5
  assert summary["cross_validation"]["folds"] == 2
  assert len(summary["test_per_class"]) == 10
  assert summary["examples_per_second"] > 0
  config = json.loads((out / "config.json").read_text())
  assert config["config"]["flags"]["model"] == "mlp"
  assert config["config"]["resolved"]["model"]["weight_init"] == "pytorch"
  assert config["versions"]["tensorflow"]
  rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().split(
      "\n") if l]
  assert any("val_accuracy" in r for r in rows)
  assert (out / "confusion_matrix.png").stat().st_size > 0

  assert listing.returncode == 0
  assert "datasets: cifar10, digits" in listing.stdout
  assert "models: alexnet, cnn" in listing.stdout
  assert "partitioners: dirichlet" in listing.stdout
  assert "backends: local, tff" in listing.stdout
  assert_one_error_line(plugin, "plugin 'no_such_plugin_mod'")
  assert_one_error_line(offline, "usps.h5")
  for proc, (_, message) in zip(refused, CENTRALIZED_BAD_FLAGS):
    assert_one_error_line(proc, message)

  # The run in a table, over an older one whose hand-written notes stay;
  # a README that simulations.reproduce renders is its spec's, refused.
  # Without its inputs the tables binary answers with one line, not absl's
  # usage dump.
  (tmp_path / "t.md").write_text("old table\n\n---\n\nnotes\n")
  owned = tmp_path / "owned.md"
  owned.write_text("table\n" + tables.regenerate_line("experiments/x.yaml"))
  table, refused_owned, no_input = run_commands("simulations.tables", [
      [f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 't.md'}"],
      [f"--runs={tmp_path / 'runs'}", f"--out={owned}"], []])
  assert table.returncode == 0, table.stderr[-1000:]
  text = (tmp_path / "t.md").read_text()
  assert "| a | digits | mlp |" in text
  assert "python -m baselines.centralized --dataset=digits" in text
  assert "old table" not in text and text.endswith("\n---\n\nnotes\n")
  assert_one_error_line(refused_owned, "rendered from experiments/x.yaml")
  assert owned.read_text().startswith("table\n")
  assert_one_error_line(no_input, "give exactly one of --runs=DIR")


def test_demo_runs(tmp_path):
  proc = run("simulations.demo", f"--out_dir={tmp_path}", "--epochs=1",
             "--rounds=2", "--local_epochs=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "accuracy.png").stat().st_size > 0
  assert "fedavg_iid" in (tmp_path / "README.md").read_text()
  assert json.loads((tmp_path / "centralized" / "summary.json").read_text())[
      "test_accuracy"] > 0.1
  for name in ("fedavg_iid", "fedavg_dirichlet0.3"):
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["rounds_run"] == 2
    assert (tmp_path / name / "partition.png").exists()


def test_federated_from_flagfile_piped(tmp_path):
  flagfile = tmp_path / "run.cfg"
  flagfile.write_text("\n".join([
      "--dataset=digits", "--model=mlp", "--algorithm=fedprox",
      "--partition=shards", "--num_clients=10", "--clients_per_round=3",
      "--rounds=2", "--local_batch_size=20", "--client_lr=0.05",
      "--client_dropout=0.2", "--per_client_eval=2"]))
  out = tmp_path / "run"
  # Through a pipe, as `... | cat` would: the command must return.
  proc = subprocess.run(
      f"{sys.executable} -m simulations.federated --flagfile={flagfile} "
      f"--out_dir={out} 2>&1 | cat", shell=True, cwd=ROOT, timeout=300,
      capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stdout[-2000:]
  assert "fedprox: test accuracy" in proc.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["algorithm"] == "fedprox" and summary["rounds_run"] == 2
  config = json.loads((out / "config.json").read_text())
  assert config["config"]["flags"]["partition"] == "shards"
  assert (out / "tb").is_dir() and (out / "partition.json").exists()


FEDERATED_BAD_FLAGS = [
    ("--algorithm=fedfoo", "unknown algorithm 'fedfoo'; choose one of:"),
    ("--clients_per_round=50", "clients_per_round must be in [1, num_clients"),
    ("--partition=zipf", "unknown partitioner 'zipf'"),
    ("--client_dropout=1.5", "client_dropout must be in [0, 1)"),
    ("--backend=spark", "unknown backend 'spark'; choose one of: local, tff"),
    ("--label_fraction=0", "label_fraction must be in (0, 1], got 0.0"),
]


def test_federated_progress_lines_and_bad_flags(tmp_path):
  # Last: its --verbosity=0 (info lines, as app.run shows them) may stay.
  *answers, tiny = run_commands("simulations.federated", [
      *([["--dataset=digits", "--num_clients=20", flag,
          f"--out_dir={tmp_path}"] for flag, _ in FEDERATED_BAD_FLAGS]),
      ["--verbosity=0", "--dataset=digits", "--model=mlp", "--rounds=3",
       "--num_clients=10", "--clients_per_round=5",
       f"--out_dir={tmp_path / 'tiny'}"]])
  # Its stderr is no terminal: one plain progress line a round, no bar.
  assert tiny.returncode == 0, tiny.stderr[-2000:]
  lines = [l for l in tiny.stderr.splitlines() if " round " in l
           and "ETA" in l]
  assert [l.split("] ", 1)[1].split("  ")[0] for l in lines] == [
      "round 1/3 (33%)", "round 2/3 (67%)", "round 3/3 (100%)"]
  assert all("clients 5/5  loss " in l and "test_acc " in l and
             " ex/s  elapsed " in l for l in lines)
  assert lines[-1].endswith("ETA 0s") and "\r" not in tiny.stderr
  for proc, (_, message) in zip(answers, FEDERATED_BAD_FLAGS):
    assert_one_error_line(proc, message)


def test_federated_ctrl_c_checkpoints_and_exits_130(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  out = tmp_path / "run"
  proc = start_binary(
      "simulations.federated",
      ["--dataset=digits", "--model=mlp", "--num_clients=10",
       "--clients_per_round=5", "--rounds=100000", "--checkpoint_every=1000",
       f"--out_dir={out}"], stdout=subprocess.PIPE)
  metrics = out / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and (
      not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
    time.sleep(0.5)
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=120)
  # A crash's "Fatal Python error: ..." line comes before its thread dump
  # and the long list of extension modules that ends stderr.
  fatal = stderr.find("Fatal Python error")
  assert proc.returncode == 130, (
      stderr[fatal:fatal + 3000] if fatal >= 0 else stderr[-2000:])
  assert "interrupted" in stderr
  # Piped, not a terminal: plain progress lines, no bar.
  assert "round 1/100000 (0%)" in stderr and "ETA" in stderr
  assert "\r" not in stderr
  checkpoints = list((out / "checkpoints").glob("round_*.npz"))
  assert checkpoints  # saved on Ctrl-C although checkpoint_every=1000


def test_grid_binary_lists_without_a_spec():
  # --list needs no spec (the tables binary without its inputs: above).
  proc = run("simulations.reproduce", "--list")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "algorithms: " in proc.stdout
