"""The guide's build machinery: step skipping and forcing, batched runs of
a binary, rendering."""

import json
import os

import pytest

from docs.guide import core


def _paths(tmp_path):
  guide = tmp_path / "guide"
  (guide / "templates").mkdir(parents=True)
  return core.Paths(guide_dir=str(guide), runs_dir=str(tmp_path / "runs"))


def test_steps_skip_when_done_rebuild_when_forced(tmp_path):
  paths = _paths(tmp_path)
  calls = []

  def build(ctx):
    calls.append(ctx.step_name)
    os.makedirs(ctx.paths.run("mine"), exist_ok=True)
    ctx.write_output("x.md", f"built {len(calls)} times\n")

  def always(ctx):
    calls.append(ctx.step_name)
    ctx.write_output("y.md", "fresh\n")

  chapter = core.Chapter(1, "01-x", "X", (
      core.Step("ch01.x", ("outputs/x.md",), build, run_dirs=("mine",)),
      core.Step("ch01.y", ("outputs/y.md",), always, always=True)))
  with open(os.path.join(paths.guide_dir, chapter.template), "w") as f:
    f.write("# X\n\n{{ include outputs/x.md }}\n")
  quiet = lambda line: None
  core.build([chapter], paths, echo=quiet)
  core.build([chapter], paths, echo=quiet)  # x is done; y always runs
  assert calls == ["ch01.x", "ch01.y", "ch01.y"]
  page = open(os.path.join(paths.guide_dir, chapter.page)).read()
  assert "built 1 times" in page and "edit the template" in page
  marker = os.path.join(paths.run("mine"), "left_over")
  open(marker, "w").close()
  core.build([chapter], paths, force=True, echo=quiet)
  assert calls[-2:] == ["ch01.x", "ch01.y"] and not os.path.exists(marker)
  times = json.load(open(paths.output(core.TIMES_FILE)))
  assert set(times) == {"ch01.x", "ch01.y"}
  assert "**total**" in core.times_markdown(times, [chapter])


def test_a_step_that_forgets_an_output_fails(tmp_path):
  paths = _paths(tmp_path)
  chapter = core.Chapter(1, "01-x", "X", (
      core.Step("ch01.x", ("outputs/never.md",), lambda ctx: None),))
  with pytest.raises(core.GuideBuildError, match="did not write"):
    core.build([chapter], paths, echo=lambda line: None)


def test_command_display_wraps_and_quotes():
  command = core.Command("simulations.federated",
                         ("--dataset=digits",) * 12 + ("--title=a b",),
                         env=(("PYTHONPATH", "examples/x"),))
  lines = command.display().splitlines()
  assert lines[0].startswith("PYTHONPATH=examples/x python -m "
                             "simulations.federated")
  assert all(l.endswith(" \\") for l in lines[:-1])
  assert all(len(l) <= core.COMMAND_WIDTH for l in lines)
  assert lines[-1].endswith("'--title=a b'")


def test_run_all_runs_one_binary_in_one_process_and_skips_done(tmp_path):
  paths = _paths(tmp_path)
  ctx = core.Context(paths, "test.step", echo=lambda line: None)
  commands = [core.Command("baselines.centralized", (
      "--dataset=digits", "--model=mlp", "--epochs=1", "--val_fraction=0",
      "--checkpoint_every=0", f"--seed={seed}",
      f"--out_dir={tmp_path / 'runs' / f'seed{seed}'}")) for seed in (0, 1)]
  printed = ctx.run_all(commands)
  assert all(p.startswith("test accuracy") for p in printed), printed
  for seed, command in enumerate(commands):
    config = json.load(open(os.path.join(command.out_dir(), "config.json")))
    # Recorded as if the binary had been run on its own.
    assert config["command"][0].endswith(os.path.join("baselines",
                                                      "centralized.py"))
    assert config["command"][1:] == list(command.args)
    assert config["config"]["flags"]["seed"] == seed
  logs = os.listdir(paths.run("logs"))
  assert "test.step.baselines.centralized.log" in logs
  # Finished runs are not run again; their printed output is kept.
  assert ctx.run_all(commands) == printed

  bad = core.Command("baselines.centralized", (
      "--dataset=digits", "--model=vgg99", f"--out_dir={tmp_path / 'bad'}"))
  with pytest.raises(core.GuideBuildError, match="unknown model 'vgg99'"):
    ctx.run_all([bad])
