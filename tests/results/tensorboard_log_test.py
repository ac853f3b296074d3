"""The TensorBoard logs of runs: tags, each step once, HParams sessions.

Event files are read back with TensorBoard's own reader (EventAccumulator),
as `tensorboard --logdir` reads them; no server is started.
"""

import json

import numpy as np
import pytest
from tensorboard import context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import backend_context
from tensorboard.plugins.hparams import get_experiment
from tensorboard.plugins.hparams import list_session_groups
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util
import tensorflow as tf

from fedclf.federated.round_loop import RoundLoop
from fedclf.federated.round_loop import RoundLoopConfig
from fedclf.federated.rounds import Checkpointer
from fedclf.federated.rounds import ServerState
from fedclf.results import RunRecorder
from fedclf.results.tensorboard_log import metric_tag
from fedclf.results.tensorboard_log import run_tensorboard_dir
from fedclf.results.tensorboard_log import scalar_values
from fedclf.results.tensorboard_log import stage_name
from fedclf.results.tensorboard_log import TensorBoardLog
from fedclf.results.tensorboard_log import write_hparams
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig
from tests.binary_batch import run_commands


def _accumulator(log_dir):
  acc = event_accumulator.EventAccumulator(
      str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return acc


def scalars(log_dir):
  """tag -> [(step, value)] of every event, in the order written."""
  acc = _accumulator(log_dir)
  return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                for e in acc.Tensors(tag)]
          for tag in acc.Tags()[event_accumulator.TENSORS]
          if not tag.startswith("_hparams_/")}


def sessions(log_dir):
  """The HParams session start infos in `log_dir`, one per write."""
  acc = _accumulator(log_dir)
  content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
  events = (acc.Tensors(hparams_metadata.SESSION_START_INFO_TAG)
            if hparams_metadata.SESSION_START_INFO_TAG in content else [])
  info = hparams_metadata.parse_session_start_info_plugin_data(
      content[hparams_metadata.SESSION_START_INFO_TAG]) if events else None
  return [info] * len(events)


def _multiplexer(folder):
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(folder))
  multiplexer.Reload()
  return multiplexer


def session_runs(folder):
  """The runs under `folder` that hold an HParams session (as `tensorboard
  --logdir folder` loads them)."""
  content = _multiplexer(folder).PluginRunToTagToContent(
      hparams_metadata.PLUGIN_NAME)
  return sorted(run for run, tags in content.items()
                if hparams_metadata.SESSION_START_INFO_TAG in tags)


def dashboard(folder):
  """What the HParams dashboard of `tensorboard --logdir folder` shows, from
  the plugin's own request handlers (TensorBoard 2.14; no server): the
  metric tags it offers and, per session group, its sessions and metric
  values."""
  multiplexer = _multiplexer(folder)
  backend = backend_context.Context(base_plugin.TBContext(
      logdir=str(folder), multiplexer=multiplexer,
      data_provider=data_provider.MultiplexerDataProvider(multiplexer,
                                                          str(folder))))
  request_context = context.RequestContext()
  experiment = get_experiment.Handler(request_context, backend, "").run()
  request = api_pb2.ListSessionGroupsRequest(
      start_index=0, slice_size=100,
      allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS])
  for info in experiment.hparam_infos:
    request.col_params.add(hparam=info.name)
  for info in experiment.metric_infos:
    request.col_params.add(metric=info.name)
  groups = list_session_groups.Handler(request_context, backend, "",
                                       request).run().session_groups
  return ([m.name.tag for m in experiment.metric_infos],
          {tuple(s.name for s in g.sessions):
           {m.name.tag: m.value for m in g.metric_values} for g in groups})


def hparams_of(info):
  return {name: getattr(value, value.WhichOneof("kind"))
          for name, value in info.hparams.items()}


@pytest.mark.parametrize("name, stage, tag", [
    ("train_loss", "", "train/loss"),
    ("loss", "ssl", "ssl/train/loss"),
    ("train_accuracy", "fold0", "fold0/train/accuracy"),
    ("test_accuracy", "", "test/accuracy"),
    ("test_loss", "", "test/loss"),
    ("target_test_accuracy", "", "test/accuracy"),
    ("target_accuracy", "", "test/accuracy"),
    ("source_test_accuracy", "", "test/source_accuracy"),
    ("usps_test_accuracy", "", "test/usps_accuracy"),
    ("val_accuracy", "probe", "probe/validation/accuracy"),
    ("val_loss", "", "validation/loss"),
    ("client_accuracy_p10", "", "clients/accuracy_p10"),
    ("client_accuracy_p50", "", "clients/accuracy_p50"),
    ("client_accuracy_p90", "", "clients/accuracy_p90"),
    ("clients_reported", "", "clients/reported"),
    ("personal_query_accuracy_after", "",
     "clients/personalized_accuracy_after"),
    ("personal_accuracy_p10", "", "clients/personal_accuracy_p10"),
    ("global_on_clients_accuracy_mean", "", "clients/global_accuracy_mean"),
    ("learning_rate", "finetune", "finetune/optimizer/learning_rate"),
    ("round_seconds", "", "throughput/seconds"),
    ("epoch_seconds", "", "throughput/seconds"),
    ("domain_accuracy", "", "domain/accuracy"),
    ("lambda", "", "domain/lambda"),
    ("representation_std", "ssl", "ssl/diagnostics/representation_std"),
    ("knn_accuracy", "", "test/knn_accuracy"),
    ("linear_probe_accuracy", "", "test/linear_probe_accuracy"),
    ("finetune_accuracy_10", "", "test/finetune_accuracy_10"),
    ("something_new", "", "other/something_new"),
    ("something_new", "probe", "probe/other/something_new"),
])
def test_metric_tags(name, stage, tag):
  assert metric_tag(name, stage) == tag


def test_stage_names():
  assert stage_name("") == ""
  assert stage_name("probe_") == "probe"
  assert stage_name("supervised_10_") == "supervised_10"
  assert stage_name("dann: ") == "dann"


def test_row_values_and_throughput():
  # A round row: throughput from its examples over its seconds.
  values = scalar_values({"round": 3, "wall_seconds": 9.0, "examples": 400.0,
                          "round_seconds": 2.0, "train_loss": 0.5,
                          "evaluation_interrupted": 1, "flag": True,
                          "name": "x"})
  assert values == {"throughput/examples": 400.0, "throughput/seconds": 2.0,
                    "train/loss": 0.5,
                    "throughput/examples_per_second": 200.0}
  # An epoch row: from the stage's examples per epoch.
  values = scalar_values({"epoch_seconds": 4.0, "loss": 1.0}, "ssl",
                         examples=100)
  assert values["ssl/throughput/examples_per_second"] == 25.0
  # A row that says it is kept as it is.
  assert scalar_values({"examples_per_second": 7.0, "round_seconds": 1.0,
                        "examples": 50})[
                            "throughput/examples_per_second"] == 7.0


def test_a_resumed_log_writes_each_step_once(tmp_path):
  first = TensorBoardLog(str(tmp_path))
  for step in (1, 2, 3):
    first.write_row(step, {"train_loss": float(step)})
  first.write_row(2, {"test_accuracy": 0.5})
  first.close()
  # Resumed from a checkpoint at step 1: steps 2 and 3 are replayed.
  resumed = TensorBoardLog(str(tmp_path))
  for step in (2, 3, 4):
    resumed.write_row(step, {"train_loss": step + 0.5,
                             "test_accuracy": step / 10})
  resumed.close()
  values = scalars(tmp_path)
  assert values["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5)]
  assert values["test/accuracy"] == [(2, 0.5), (3, pytest.approx(0.3)),
                                     (4, pytest.approx(0.4))]


def test_hparams_are_written_once(tmp_path):
  flags = {"lr": 0.1, "model": "mlp", "resume": False, "seeds": [1, 2],
           "plugin": None, "rounds": 3}
  write_hparams(str(tmp_path), flags, "run-a")
  write_hparams(str(tmp_path), {**flags, "resume": True}, "run-a")
  (info,) = sessions(tmp_path)
  assert info.group_name == "run-a"
  assert hparams_of(info) == {"lr": 0.1, "model": "mlp", "resume": False,
                              "seeds": "[1, 2]", "plugin": "", "rounds": 3.0}


def _shared_tags_at(values, tags, steps):
  for tag in tags:
    assert [s for s, _ in values[tag]] == steps, tag


def test_federated_binary_logs_tags_and_hparams_per_run(tmp_path):
  runs = tmp_path / "table"
  args = ["--dataset=digits", "--model=mlp", "--rounds=2", "--num_clients=4",
          "--clients_per_round=2", "--per_client_eval=2",
          "--checkpoint_every=1", "--train_limit=200"]
  first, second, resumed = run_commands("simulations.federated", [
      [*args, f"--out_dir={runs / 'a'}"],
      [*args, "--seed=1", f"--out_dir={runs / 'b'}"],
      [*args, "--rounds=3", "--resume", f"--out_dir={runs / 'a'}"]])
  for proc in (first, second, resumed):
    assert proc.returncode == 0, proc.stderr[-2000:]
  values = scalars(runs / "a" / "tb")
  _shared_tags_at(values, (
      "train/loss", "train/accuracy", "test/loss", "test/accuracy",
      "clients/accuracy_p10", "clients/accuracy_p50", "clients/accuracy_p90",
      "throughput/examples_per_second", "throughput/seconds",
      "communication/upload_bytes", "communication/download_bytes"),
                  [1, 2, 3])
  assert not [t for t in values if t.startswith("other/")]
  rows = [json.loads(l) for l in
          (runs / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [v for _, v in values["test/accuracy"]] == pytest.approx(
      [r["test_accuracy"] for r in rows])
  # One HParams session per run folder, the resumed one's included.
  assert session_runs(runs) == ["a/tb", "b/tb"]
  metrics, groups = dashboard(runs)
  assert metrics[:3] == ["test/accuracy", "test/loss", "train/loss"]
  assert sorted(groups) == [("a/tb",), ("b/tb",)]
  assert groups[("a/tb",)]["test/accuracy"] == pytest.approx(
      rows[-1]["test_accuracy"])
  infos = [sessions(runs / name / "tb") for name in ("a", "b")]
  assert [len(i) for i in infos] == [1, 1]
  a, b = (hparams_of(i[0]) for i in infos)
  assert a["rounds"] == 2 and a["resume"] is False and a["seed"] == 0
  assert b["seed"] == 1 and a["out_dir"] == str(runs / "a")
  assert infos[0][0].group_name != infos[1][0].group_name


def test_centralized_binary_logs_tags_folds_and_hparams(tmp_path):
  out = tmp_path / "run"
  (proc,) = run_commands("baselines.centralized", [[
      "--dataset=digits", "--model=mlp", "--epochs=2", "--batch_size=64",
      "--cv_folds=2", "--train_limit=200", f"--out_dir={out}"]])
  assert proc.returncode == 0, proc.stderr[-2000:]
  values = scalars(out / "tb")
  _shared_tags_at(values, (
      "train/loss", "train/accuracy", "validation/accuracy",
      "optimizer/learning_rate", "throughput/examples_per_second",
      "fold0/train/loss", "fold1/train/loss"), [1, 2])
  summary = json.loads((out / "summary.json").read_text())
  assert values["test/accuracy"] == [(2, pytest.approx(
      summary["test_accuracy"]))]
  assert values["test/loss"][0][0] == 2
  (info,) = sessions(out / "tb")
  flags = hparams_of(info)
  assert flags["model"] == "mlp" and flags["cv_folds"] == 2
  assert flags["epochs"] == 2 and flags["dataset"] == "digits"


class _CountingRounds:
  """A stand-in RoundRunner and Evaluator: one weight, moved by each round;
  the metrics are functions of the round, so a replay writes the same."""

  def initial_state(self):
    return ServerState([np.zeros(1)], [], [], [], 0)

  def train_round(self, state, client_states, round_num):
    del client_states
    return (ServerState([state.trainable[0] + 1], [], [], [], round_num),
            {"train_loss": 1.0 / round_num, "examples": 10.0})

  def evaluate(self, state, round_num):
    return {"test_accuracy": state.trainable[0][0] / 10}


def _round_loop(out_dir, rounds, resume):
  rounds_runner = _CountingRounds()
  recorder = RunRecorder(str(out_dir), {}, resume=resume)
  loop = RoundLoop(RoundLoopConfig(rounds=rounds, checkpoint_every=2),
                   rounds_runner, rounds_runner, recorder,
                   Checkpointer(str(out_dir / "checkpoints")), "t",
                   str(out_dir))
  return loop.run(resume, on_divergence=lambda progress: None)


def test_a_resumed_round_loop_shows_each_round_once(tmp_path):
  _round_loop(tmp_path, 3, resume=False)
  # Killed after round 3's row, before its checkpoint: the resumed run
  # replays round 3 from round 2's checkpoint.
  (tmp_path / "checkpoints" / "round_00003.npz").unlink()
  _round_loop(tmp_path, 4, resume=True)
  values = scalars(tmp_path / "tb")
  for tag in ("train/loss", "test/accuracy", "throughput/examples",
              "throughput/examples_per_second", "throughput/seconds"):
    assert [step for step, _ in values[tag]] == [1, 2, 3, 4], tag
  assert [v for _, v in values["test/accuracy"]] == pytest.approx(
      [0.1, 0.2, 0.3, 0.4])
  assert len(list((tmp_path / "tb").glob("*tfevents*"))) == 2


def _epoch_driver(tmp_path, resume):
  weight = tf.Variable(0.0, dtype=tf.float64)
  return EpochDriver(EpochDriverConfig(
      epochs=5, seed=3, checkpoint_dir=str(tmp_path / "c"),
      checkpoint_every=2, resume=resume, metric_prefix="probe_",
      examples_per_epoch=10), {"weight": weight})


def test_a_resumed_epoch_driver_shows_each_epoch_once(tmp_path):
  def run_epoch(epoch, seed):
    if epoch == 4:
      raise KeyboardInterrupt()
    return {"loss": 1.0 / epoch}

  recorder = RunRecorder(str(tmp_path / "run"), {})
  tb = run_tensorboard_dir(recorder)
  with pytest.raises(KeyboardInterrupt):
    _epoch_driver(tmp_path, False).run(run_epoch, recorder=recorder,
                                       tensorboard_dir=tb)
  # Epochs 1-3 are logged, 2 is the last checkpoint: epoch 3 is replayed.
  recorder = RunRecorder(str(tmp_path / "run"), {}, resume=True)
  _epoch_driver(tmp_path, True).run(lambda epoch, seed: {"loss": 1.0 / epoch},
                                    recorder=recorder, tensorboard_dir=tb)
  values = scalars(tb)
  for tag in ("probe/train/loss", "probe/throughput/seconds",
              "probe/throughput/examples_per_second"):
    assert [step for step, _ in values[tag]] == [1, 2, 3, 4, 5], tag
  assert [r["epoch"] for r in recorder.read_metrics()] == [1, 2, 3, 4, 5]
