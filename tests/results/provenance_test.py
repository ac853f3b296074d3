"""Provenance: portable commands, source.patch, warnings for dirty results."""

import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys

import pytest

from fedclf.errors import UserError
from fedclf.results import provenance
from fedclf.results import RunRecorder
from fedclf.results import tables
from tests.binary_batch import ROOT
from tests.binary_batch import assert_one_error_line


def git(repo, *args):
  return subprocess.run(["git", *args], cwd=repo, check=True,
                        capture_output=True, text=True).stdout


@pytest.fixture(name="repo")
def fixture_repo(tmp_path, monkeypatch):
  """A committed fedclf-like checkout, which the running code is from."""
  for name in ("GIT_AUTHOR", "GIT_COMMITTER"):
    monkeypatch.setenv(f"{name}_NAME", "test")
    monkeypatch.setenv(f"{name}_EMAIL", "test@example.com")
  repo = tmp_path / "repo"
  (repo / "fedclf").mkdir(parents=True)
  (repo / "fedclf" / "__init__.py").write_text("")
  (repo / "fedclf" / "model.py").write_text("WIDTH = 32\n")
  (repo / "weights.bin").write_bytes(bytes(range(256)))
  (repo / "results" / "old").mkdir(parents=True)
  (repo / "results" / "old" / "summary.json").write_text("{}\n")
  git(repo, "init", "-q")
  git(repo, "add", ".")
  git(repo, "commit", "-q", "-m", "first")
  monkeypatch.setattr(provenance, "code_root", lambda: str(repo))
  return repo


def make_dirty(repo):
  (repo / "fedclf" / "model.py").write_text("WIDTH = 64\n")
  (repo / "weights.bin").write_bytes(bytes(range(255, -1, -1)) + b"\0x")
  (repo / "experiments").mkdir()
  (repo / "experiments" / "new.yaml").write_text("binary: x\n")
  (repo / "notes.md").write_text("not code\n")


def record_run(out_dir, argv, monkeypatch, resume=False):
  monkeypatch.setattr(sys, "argv", argv)
  RunRecorder(str(out_dir), {"a": 1}, resume=resume)
  return json.loads((out_dir / "config.json").read_text())


def test_paths_in_a_checkout_are_relative_others_absolute(repo, tmp_path,
                                                          monkeypatch):
  home = tmp_path / "home"
  monkeypatch.setenv("HOME", str(home))
  argv = [f"{repo}/simulations/federated.py", f"--out_dir={repo}/results/x",
          "--spec", f"{repo}/experiments/a.yaml", f"--data_dir={home}/data",
          "--init_weights=/opt/w.keras", f"--flagfile={repo}/exp/m.cfg",
          f"--inits={repo}/a,/opt/b", "--label_fractions=0.01,0.1",
          "--seed", "3", "--dataset=mnist"]
  assert provenance.portable_command(argv) == [
      "simulations/federated.py", "--out_dir=results/x",
      "--spec", "experiments/a.yaml", "--data_dir=~/data",
      "--init_weights=/opt/w.keras", "--flagfile=exp/m.cfg",
      "--inits=a,/opt/b", "--label_fractions=0.01,0.1", "--seed", "3",
      "--dataset=mnist"]


def test_old_records_render_relative_in_tables():
  config = {"command": [
      "/tmp/runner/simulations/federated.py", "--dataset=mnist",
      "--out_dir=/machine/main/results/adaptive/x",
      "--init=/machine/main/results/a/model.keras", "--data_dir=/data/x",
      "--resume"]}
  assert tables._command(config) == (
      "python -m simulations.federated --dataset=mnist "
      "--out_dir=results/adaptive/x --init=results/a/model.keras "
      "--data_dir=/data/x")
  assert tables._command({"command": [
      "/tmp/a_runner/fedclf/export/__main__.py", "--run_dir=results/b",
      "--out_dir=results/export"]}) == (
          "python -m fedclf.export --run_dir=results/b "
          "--out_dir=results/export")
  assert tables._command({"command": ["baselines/centralized.py"]}) == (
      "python -m baselines.centralized")
  # A checkout named like the package.
  assert tables._command({"command": [
      "/src/fedclf/fedclf/export/__main__.py", "--spec=/src/fedclf/e.yaml",
      "--out_dir=/src/fedclf/results/x"]}) == (
          "python -m fedclf.export --spec=e.yaml --out_dir=results/x")


def test_a_dirty_checkout_writes_a_patch_that_git_apply_recovers(
    repo, tmp_path, monkeypatch):
  commit = git(repo, "rev-parse", "HEAD").strip()
  make_dirty(repo)
  # A user's git config that would make a diff `git apply` refuses.
  for i, (key, value) in enumerate([("diff.noprefix", "true"),
                                    ("color.ui", "always")]):
    monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", key)
    monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", value)
  monkeypatch.setenv("GIT_CONFIG_COUNT", "2")
  out = repo / "results" / "new"
  config = record_run(out, [f"{repo}/baselines/centralized.py",
                            f"--out_dir={out}"], monkeypatch)
  assert config["command"] == ["baselines/centralized.py",
                               "--out_dir=results/new"]
  assert config["out_dir"] == str(out)
  assert config["git"] == {"commit": commit, "dirty": True}
  patch = (out / "source.patch").read_bytes()
  assert config["source_patch"] == "source.patch"
  assert config["source_patch_sha256"] == hashlib.sha256(patch).hexdigest()
  assert config["source_patch_untracked"] == ["experiments/new.yaml"]
  assert "source_patch_capped" not in config
  # The recorded commit plus the patch is the code that ran.
  monkeypatch.setenv("GIT_CONFIG_COUNT", "0")
  clone = tmp_path / "clone"
  git(tmp_path, "clone", "-q", str(repo), str(clone))
  git(clone, "checkout", "-q", commit)
  git(clone, "apply", str(out / "source.patch"))
  for name in ("fedclf/model.py", "weights.bin", "experiments/new.yaml"):
    assert (clone / name).read_bytes() == (repo / name).read_bytes(), name
  assert not (clone / "notes.md").exists()


def test_a_clean_checkout_writes_no_patch(repo, monkeypatch):
  out = repo / "results" / "new"
  config = record_run(out, ["baselines/centralized.py"], monkeypatch)
  assert config["git"]["dirty"] is False
  assert "source_patch" not in config
  assert not (out / "source.patch").exists()


def test_a_resumed_run_keeps_the_patch_unless_the_code_changed(
    repo, tmp_path, monkeypatch):
  make_dirty(repo)
  out = tmp_path / "run"
  first = record_run(out, ["x.py"], monkeypatch)
  assert record_run(out, ["x.py"], monkeypatch, resume=True) == first
  [same] = [json.loads(p.read_text()) for p in out.glob("config.resume-*")]
  assert same["source_patch"] == "source.patch"
  assert same["source_patch_sha256"] == first["source_patch_sha256"]
  assert not list(out.glob("source.resume-*"))
  (repo / "fedclf" / "model.py").write_text("WIDTH = 128\n")
  record_run(out, ["x.py"], monkeypatch, resume=True)
  [changed] = [r for r in (json.loads(p.read_text())
                           for p in out.glob("config.resume-*"))
               if r["source_patch"] != "source.patch"]
  assert changed["source_patch"].startswith("source.resume-")
  assert b"WIDTH = 128" in (out / changed["source_patch"]).read_bytes()
  assert b"WIDTH = 64" in (out / "source.patch").read_bytes()


def test_the_patch_is_capped_and_says_so(repo):
  make_dirty(repo)
  (repo / "big.py").write_text("x = 1\n" * 2000)
  patch = provenance.source_patch(str(repo), cap_bytes=4000)
  assert patch.omitted == ["big.py"]
  assert b"WIDTH = 64" in patch.text and b"big.py" not in patch.text
  # Over the cap, only code files' diffs are kept; then nothing.
  code = provenance.source_patch(str(repo), cap_bytes=300)
  assert b"WIDTH = 64" in code.text and "weights.bin" in code.omitted
  nothing = provenance.source_patch(str(repo), cap_bytes=10)
  assert nothing.text == b"" and "fedclf/model.py" in nothing.omitted


def test_not_a_checkout_warns_and_the_run_goes_on(tmp_path, monkeypatch,
                                                  caplog):
  plain = tmp_path / "plain"
  plain.mkdir()
  monkeypatch.setattr(provenance, "code_root", lambda: str(plain))
  out = tmp_path / "run"
  with caplog.at_level(logging.WARNING):
    config = record_run(out, ["x.py"], monkeypatch)
  assert config["git"] == {"commit": None, "dirty": None}
  assert "source_patch" not in config
  assert "no source.patch" in caplog.text
  assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_dirty_results_warn_or_are_refused(repo, tmp_path, caplog):
  committed = str(repo / "results" / "old")
  provenance.check_clean_for_results(committed, require_clean=True)
  make_dirty(repo)
  with caplog.at_level(logging.WARNING):
    provenance.check_clean_for_results(committed, require_clean=False)
  assert "1 changed: fedclf/model.py" not in caplog.text
  assert "2 changed: fedclf/model.py, weights.bin" in caplog.text
  with pytest.raises(UserError, match="--require_clean: .*weights.bin"):
    provenance.check_clean_for_results(committed, require_clean=True)
  # Results that are not committed (yet) draw nothing.
  for untracked in (repo / "results" / "new", tmp_path / "elsewhere"):
    provenance.check_clean_for_results(str(untracked), require_clean=True)


# The binary runs in a child process (absl's flags are global: another
# test's module in this worker may define a flag of the same name), with the
# checkout it checks swapped for `repo`.
_REPRODUCE_IN = """
import sys
from fedclf import cli
from fedclf.results import provenance
from simulations import reproduce
provenance.code_root = lambda: sys.argv[1]
sys.exit(cli.run_in_process(reproduce.main, sys.argv[2:]))
"""


def _reproduce(repo, *args):
  return subprocess.run(
      [sys.executable, "-c", _REPRODUCE_IN, str(repo), "reproduce", *args],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), check=False)


def test_reproduce_refuses_dirty_committed_results(repo):
  make_dirty(repo)
  spec = repo / "spec.yaml"
  spec.write_text(f"binary: baselines.centralized\nout_dir: "
                  f"{repo / 'results' / 'old'}\ngrid: {{seed: [0]}}\n")
  args = (f"--spec={spec}", "--only=nope")
  refused = _reproduce(repo, *args, "--require_clean")
  assert refused.returncode == 2, refused.stderr[-2000:]
  assert_one_error_line(refused, "--require_clean")
  # Without it: a warning, then the run as before (here a bad --only).
  warned = _reproduce(repo, *args)
  assert warned.returncode == 2, warned.stderr[-2000:]
  assert "uncommitted changes" in warned.stderr
  assert "no run named 'nope'" in warned.stderr
  assert pathlib.Path(repo / "results" / "old" / "summary.json").exists()
  os.remove(spec)
