"""Accuracy plots: the target line, a y range on the results, seed bands,
the legend's place, and one style for every results figure."""

import json

import pytest

from fedclf.errors import UserError
from fedclf.results import curves
from fedclf.results import figure_style
from fedclf.results import grid


def _run(tmp_path, name, accuracies, target=0.0, **summary):
  run_dir = tmp_path / name
  run_dir.mkdir()
  (run_dir / "metrics.jsonl").write_text("".join(
      json.dumps({"round": i + 1, "test_accuracy": a}) + "\n"
      for i, a in enumerate(accuracies)))
  (run_dir / "config.json").write_text(json.dumps(
      {"config": {"flags": {"target_accuracy": target}}}))
  (run_dir / "summary.json").write_text(json.dumps(summary))
  return str(run_dir)


def _horizontal_lines(ax):
  return {line.get_label(): list(line.get_ydata()) for line in ax.lines
          if len(set(line.get_ydata())) == 1 and len(line.get_ydata()) == 2}


def test_target_line_zoomed_range_and_a_band_per_seeded_group(tmp_path):
  rising = [0.2, 0.6, 0.9, 0.97, 0.985, 0.991]
  groups = {
      "fedavg": [_run(tmp_path, f"avg_s{s}", [a - 0.002 * s for a in rising],
                      target=0.99) for s in range(3)],
      "fedsgd": [_run(tmp_path, "sgd", [0.1, 0.5, 0.8, 0.9, 0.95, 0.98],
                      target=0.99)],
      "dead": [_run(tmp_path, "dead", [0.1, 0.09], target=0.99,
                    diverged_at_round=3)],
  }
  fig = curves.plot_seed_bands(groups, str(tmp_path / "acc.png"), "t")
  assert (tmp_path / "acc.png").stat().st_size > 0
  ax = fig.axes[0]
  # The runs' --target_accuracy is drawn, at the target.
  assert _horizontal_lines(ax) == {"target accuracy 0.99": [0.99, 0.99]}
  # The y axis shows where the curves end and the target lies, not 0-1:
  # from a little below the lowest halfway value (fedsgd's 0.9) to just
  # above the best; the diverged run's 0.1 does not pull it down.
  low, high = ax.get_ylim()
  assert 0.8 < low < 0.9 and 0.991 < high <= 1.0
  # One shaded band: the group with three seeds; min-max, as the legend
  # says.
  assert len(ax.collections) == 1
  band = ax.collections[0].get_paths()[0].vertices[:, 1]
  assert band.min() == pytest.approx(0.2 - 0.004)
  assert band.max() == pytest.approx(0.991)
  legend = ax.get_legend()
  assert legend.get_title().get_text() == curves.BAND_NOTE
  labels = [t.get_text() for t in legend.get_texts()]
  assert "fedavg (n=3)" in labels
  assert "dead (diverged at round 3)" in labels


def test_spec_target_and_references_override_and_add_lines(tmp_path):
  groups = {"a": [_run(tmp_path, "a", [0.5, 0.8, 0.88])]}
  fig = curves.plot_seed_bands(groups, str(tmp_path / "p.png"), "t",
                               target=0.9, references={"paper": 0.89})
  lines = _horizontal_lines(fig.axes[0])
  assert lines == {"target accuracy 0.9": [0.9, 0.9],
                   "paper (0.890)": [0.89, 0.89]}
  assert fig.axes[0].get_ylim()[0] < 0.88
  # No target anywhere: no line, and no band for a single seed.
  fig = curves.plot_seed_bands(groups, str(tmp_path / "q.png"), "t")
  assert _horizontal_lines(fig.axes[0]) == {}
  assert not fig.axes[0].collections


def test_many_curves_put_the_legend_outside_the_axes(tmp_path):
  few = {f"r{i}": [_run(tmp_path, f"r{i}", [0.5, 0.6 + 0.01 * i])]
         for i in range(figure_style.MAX_LEGEND_ENTRIES_INSIDE + 2)}
  fig = curves.plot_seed_bands(few, str(tmp_path / "m.png"), "t")
  fig.canvas.draw()
  ax = fig.axes[0]
  renderer = fig.canvas.get_renderer()
  assert (ax.get_legend().get_window_extent(renderer).x0 >
          ax.get_window_extent(renderer).x1)
  fig = curves.plot_seed_bands({"r0": few["r0"]}, str(tmp_path / "o.png"),
                               "t")
  fig.canvas.draw()
  ax = fig.axes[0]
  assert (ax.get_legend().get_window_extent(renderer).x1 <=
          ax.get_window_extent(renderer).x1)


def test_more_series_than_colours_differ_by_line_style(tmp_path):
  # A grid's table plots dozens of settings; tab10 alone would repeat.
  count = figure_style.COLORS + 5
  groups = {f"s{i}": [_run(tmp_path, f"s{i}", [0.5, 0.6 + 0.01 * i])]
            for i in range(count)}
  fig = curves.plot_seed_bands(groups, str(tmp_path / "many.png"), "t")
  looks = [(line.get_color(), line.get_linestyle())
           for line in fig.axes[0].lines if line.get_label() in groups]
  assert len(looks) == count == len(set(looks))
  assert looks[0][1] == "-" and looks[figure_style.COLORS][1] == "--"
  assert looks[0][0] == looks[figure_style.COLORS][0]


def test_curves_of_very_different_lengths_get_a_log_round_axis(tmp_path):
  groups = {"short": [_run(tmp_path, "s", [0.5, 0.9])],
            "long": [_run(tmp_path, "l", [0.5] * 40 + [0.9])]}
  fig = curves.plot_seed_bands(groups, str(tmp_path / "l.png"), "t")
  assert fig.axes[0].get_xscale() == "log"
  groups = {"short": groups["short"],
            "long": [_run(tmp_path, "l2", [0.5, 0.7, 0.9])]}
  fig = curves.plot_seed_bands(groups, str(tmp_path / "n.png"), "t")
  assert fig.axes[0].get_xscale() == "linear"


def test_accuracy_ylim():
  # Finals near 0.99 and a 0.99 target: zoomed, not 0-1.
  assert curves.accuracy_ylim([[0.1, 0.98], [0.5, 0.992]], [0.99]) == (
      pytest.approx(0.96), pytest.approx(0.997))
  # A brief collapse late in a run (0.3) does not widen it; the halfway
  # point of a short run (0.8) does.
  assert curves.accuracy_ylim([[0.5, 0.9, 0.98, 0.3, 0.98]], [])[0] == (
      pytest.approx(0.96))
  assert curves.accuracy_ylim([[0.5, 0.8, 0.9]], [])[0] == pytest.approx(
      0.75)
  assert curves.accuracy_ylim([], []) == (0.0, 1.0)
  low, high = curves.accuracy_ylim([[0.0, 0.01]], [])
  assert low == 0.0 and high == pytest.approx(0.015)


def test_domain_adaptation_summary_target_accuracy_is_no_target(tmp_path):
  # There summary.json's target_accuracy is the target domain's accuracy;
  # the target line comes from the --target_accuracy flag only.
  run = _run(tmp_path, "da", [0.5, 0.6], target_accuracy=0.6)
  assert curves.run_target(run) is None
  assert curves.run_target(_run(tmp_path, "f", [0.5], target=0.99)) == 0.99


def test_every_results_figure_is_drawn_in_the_one_style(tmp_path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  with figure_style.results_figure(str(tmp_path / "x.png"), (3, 2)) as fig:
    for key, value in figure_style.RESULTS_STYLE.items():
      assert matplotlib.rcParams[key] == value, key
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1])
  assert (tmp_path / "x.png").stat().st_size > 0
  # The style does not leak into the caller.
  assert (matplotlib.rcParams["savefig.bbox"] !=
          figure_style.RESULTS_STYLE["savefig.bbox"])


def test_client_box_plot_is_written_and_needs_client_accuracies(tmp_path):
  run = _run(tmp_path, "c", [0.5])
  assert not curves.plot_client_accuracy({"c": [run]},
                                         str(tmp_path / "c.png"), "t")
  (tmp_path / "c" / "client_accuracy.json").write_text(
      json.dumps({"round": 1, "accuracy": [0.5, 0.7, 0.9]}))
  assert curves.plot_client_accuracy({"c": [run]}, str(tmp_path / "c.png"),
                                     "t")
  assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.parametrize("table, message", [
    ({"target_accuracy": 99}, "target_accuracy must be a number in"),
    ({"target_accuracy": "high"}, "target_accuracy must be a number in"),
    ({"references": [0.9]}, "references must map labels"),
    ({"references": {"paper": 1.5}}, "references must map labels"),
])
def test_bad_spec_plot_lines_are_user_errors(table, message):
  with pytest.raises(UserError, match=message):
    grid.table_lines(table, "s.yaml")


def test_spec_plot_lines():
  assert grid.table_lines({"title": "t"}, "s.yaml") == (None, {})
  assert grid.table_lines({"target_accuracy": 0.99,
                           "references": {"paper": 0.992}}, "s.yaml") == (
                               0.99, {"paper": 0.992})


def test_tables_binary_plots_runs_with_their_target(tmp_path):
  from tests.binary_batch import run_commands  # pylint: disable=g-import-not-at-top
  runs = tmp_path / "runs"
  runs.mkdir()
  _run(runs, "avg", [0.5, 0.9, 0.99], target=0.99, algorithm="fedavg",
       final_test_accuracy=0.99, rounds_run=3)
  out, plot = tmp_path / "t.md", tmp_path / "p.png"
  proc, = run_commands("simulations.tables", [
      [f"--runs={runs}", f"--out={out}", f"--plot={plot}"]])
  assert proc.returncode == 0, proc.stderr[-1000:]
  assert plot.stat().st_size > 0
  assert "![test accuracy per round](p.png)" in out.read_text()
  assert "| avg | fedavg |" in out.read_text()


def test_round_curves_of_single_runs_draw_references_and_target(tmp_path):
  # As the demo and the guide call it: runs' curves and a centralized line.
  path = tmp_path / "demo.png"
  curves.plot_round_curves({"fedavg": ([1, 2, 3], [0.5, 0.8, 0.9])},
                           str(path), "demo", {"centralized": 0.95},
                           target=0.9)
  assert path.stat().st_size > 0


def test_runs_that_logged_no_round_draw_an_empty_plot(tmp_path):
  # A run that diverged in its first round has no curve; the plot still
  # says what it is instead of failing.
  dead = _run(tmp_path, "dead", [], diverged_at_round=1)
  fig = curves.plot_seed_bands({"dead": [dead]}, str(tmp_path / "e.png"), "t")
  assert fig.axes[0].get_ylim() == (0.0, 1.0)
  assert not fig.axes[0].lines


def test_upload_axis_is_cumulative_megabytes(tmp_path):
  run_dir = tmp_path / "topk"
  run_dir.mkdir()
  rows = [{"round": 1, "upload_bytes": 2_000_000},  # not evaluated
          {"round": 2, "upload_bytes": 2_000_000, "test_accuracy": 0.5},
          {"round": 3, "upload_bytes": 1_000_000, "test_accuracy": 0.7}]
  (run_dir / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  assert curves.read_curve(str(run_dir), x=curves.UPLOAD_MEGABYTES) == (
      [4.0, 5.0], [0.5, 0.7])
  assert curves.read_curve(str(run_dir)) == ([2, 3], [0.5, 0.7])
  dense = _run(tmp_path, "dense", [0.5, 0.8])  # rows without bytes: 0 MB
  fig = curves.plot_seed_bands({"topk": [str(run_dir)], "dense": [dense]},
                               str(tmp_path / "mb.png"), "t",
                               x=curves.UPLOAD_MEGABYTES)
  assert fig.axes[0].get_xlabel() == curves.UPLOAD_MEGABYTES_LABEL
