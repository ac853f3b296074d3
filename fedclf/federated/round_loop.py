"""The round loop: written once, for every federated run in fedclf.

    plan + train the round (RoundRunner) -> record -> evaluate (Evaluator)
    -> checkpoint -> next round

What a round does is injected: a `RoundRunner` trains the sampled clients
and returns the new server state with the round's training row (the
supervised and self-supervised simulations run an algorithm's client work on
a backend; federated domain adaptation runs its per-domain client update),
and an `Evaluator` scores the global model. The loop owns everything that
must behave the same for all of them: resume from the newest checkpoint
(replaying the metrics rows logged after it), the evaluation schedule, the
target-accuracy stop, Ctrl-C (the last completed round is checkpointed and
its row kept, see `_EVALUATION_INTERRUPTED`), a divergence recorded in
summary.json, TensorBoard scalars (the tags of `fedclf.results.
tensorboard_log`, each round once across resumes) and the progress fields
of the summary.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Dict, List, Optional, Protocol, Tuple

from absl import logging

from fedclf.errors import DivergenceError
from fedclf.errors import as_interrupt
from fedclf.errors import is_interrupt
from fedclf.federated.communication import CommunicationTotals
from fedclf.federated.rounds import Checkpointer
from fedclf.federated.rounds import ServerState
from fedclf.results.progress import Step
from fedclf.results.progress import StepProgress
from fedclf.results.record import RunRecorder
from fedclf.results.tensorboard_log import TensorBoardLog

ClientStates = Dict[int, List]
Row = Dict[str, float]

# Marks the logged training row of a round whose evaluation Ctrl-C cut short.
_EVALUATION_INTERRUPTED = "evaluation_interrupted"


class RoundRunner(Protocol):
  """Trains one round: picks the round's clients (every random choice from
  (seed, round)), trains them and updates the server state."""

  def initial_state(self) -> ServerState:
    """The server state of round 0 (also the checkpoint template)."""

  def train_round(self, state: ServerState, client_states: ClientStates,
                  round_num: int) -> Tuple[ServerState, Row]:
    """Returns the state after `round_num` and its training row; updates
    `client_states` in place. Raises DivergenceError on divergence."""


class Evaluator(Protocol):
  """Scores the global model of a server state."""

  def evaluate(self, state: ServerState, round_num: int) -> Row:
    """Metrics of the state's global model; the loop compares
    `test_accuracy` (when present) with the target. An evaluator that also
    scores personal models has `watch_client_states(client_states)`, which
    the loop calls once with the dict it updates in place."""


@dataclasses.dataclass(frozen=True)
class RoundLoopConfig:
  """When the loop evaluates, checkpoints and stops.

  Attributes:
    rounds: the last round.
    eval_every: evaluate after every this many rounds and after the last
      (0: after the last only).
    checkpoint_every: checkpoint every this many rounds, after the last and
      at a target stop (0: never, and --resume starts over).
    target_accuracy: report the first evaluated round whose test accuracy
      reaches this (0: none).
    stop_at_target: stop there.
    log_name: how the loop's log lines name the run.
  """
  rounds: int
  eval_every: int = 1
  checkpoint_every: int = 10
  target_accuracy: float = 0.0
  stop_at_target: bool = False
  log_name: str = "round"

  def evaluates(self, round_num: int) -> bool:
    """Whether the global model is evaluated after `round_num`."""
    return round_num == self.rounds or bool(
        self.eval_every and round_num % self.eval_every == 0)


@dataclasses.dataclass
class RoundLoopResult:
  """Where the loop ended: the final state and client states, the last
  evaluation's metrics and the summary's progress fields."""
  state: ServerState
  client_states: ClientStates
  last_eval: Row
  progress: Dict


def _log_round(reporter: StepProgress, round_num: int, row: Row) -> None:
  metrics = []
  if "clients_sampled" in row:
    metrics.append(f"clients {row['clients_reported']:.0f}/"
                   f"{row['clients_sampled']:.0f}")
  metrics.append(f"loss {row.get('train_loss', float('nan')):.4f}")
  if "test_accuracy" in row:
    metrics.append(f"test_acc {row['test_accuracy']:.4f}")
  reporter.step(Step(round_num, metrics, row.get("round_seconds", 0.0),
                     row.get("examples", 0.0)))


class _Progress:
  """What the run got through, rebuilt from the logged rows on resume:
  the target round, the training time and the client examples."""

  def __init__(self, config: RoundLoopConfig, history: List[Row]):
    self.config = config
    self.reached = next((r["round"] for r in history
                         if config.target_accuracy and
                         r.get("test_accuracy", 0) >= config.target_accuracy),
                        None)
    self.train_seconds = sum(r.get("round_seconds", 0.0) for r in history)
    self.examples = sum(r.get("examples", 0.0) for r in history)
    self.communication = CommunicationTotals(history)

  def add(self, round_num: int, row: Row) -> None:
    self.train_seconds += row["round_seconds"]
    self.examples += row.get("examples", 0.0)
    self.communication.add(row)
    if (self.reached is None and self.config.target_accuracy and
        row.get("test_accuracy", 0.0) >= self.config.target_accuracy):
      self.reached = round_num

  def stops(self) -> bool:
    return self.config.stop_at_target and self.reached is not None

  def fields(self, rounds_run: int) -> Dict:
    return {"rounds_run": rounds_run,
            "target_accuracy": self.config.target_accuracy or None,
            "rounds_to_target": self.reached,
            "train_seconds": round(self.train_seconds, 3),
            "client_examples_per_second": round(
                self.examples / max(self.train_seconds, 1e-9), 1),
            **self.communication.fields()}


@dataclasses.dataclass
class _Cursor:
  """Where the loop is: the newest trained state, the newest evaluation's
  metrics, and the row of a round that trained but is not logged yet
  (Ctrl-C during its evaluation must not lose it)."""
  state: ServerState
  last_eval: Row = dataclasses.field(default_factory=dict)
  unlogged: Optional[Row] = None


class RoundLoop:
  """Runs rounds of a `RoundRunner` with its `Evaluator` into a run folder
  (metrics rows through `recorder`, checkpoints through `checkpointer`,
  TensorBoard scalars under `out_dir/tb`)."""

  def __init__(self, config: RoundLoopConfig, runner: RoundRunner,
               evaluator: Evaluator, recorder: RunRecorder,
               checkpointer: Checkpointer, checkpoint_tag: str, out_dir: str):
    self.config = config
    self.runner = runner
    self.evaluator = evaluator
    self.recorder = recorder
    self.checkpointer = checkpointer
    self.tag = checkpoint_tag
    self.out_dir = out_dir

  def run(self, resume: bool,
          on_divergence: Callable[[Dict], None]) -> RoundLoopResult:
    """Trains from round 0, or with `resume` from the newest checkpoint.

    On divergence `on_divergence` gets the progress fields (with
    `diverged_at_round` and `divergence`) to record before the error
    propagates; Ctrl-C checkpoints the last completed round and raises
    KeyboardInterrupt (SIGTERM and a closed output too: their
    KeyboardInterrupt subclasses, fedclf.errors, re-raised as they came).
    """
    state = self.runner.initial_state()
    client_states: ClientStates = {}
    restored = (self.checkpointer.restore_latest(state, self.tag)
                if resume else None)
    if restored is not None:
      path, state, client_states = restored
      logging.info("resumed from %s (round %d)", path, state.round_num)
    # An evaluator of personal models (FedPer's heads, Ditto's models)
    # reads the clients' states; this dict is updated in place each round.
    watch = getattr(self.evaluator, "watch_client_states", None)
    if watch is not None:
      watch(client_states)
    tb = TensorBoardLog(os.path.join(self.out_dir, "tb"))
    if resume:
      # Rounds logged after the checkpoint (all of them if there is none)
      # are replayed; after an unreadable newest checkpoint, that includes
      # the rounds since the previous one.
      self.recorder.drop_metrics_after(state.round_num, "round")
      self._finish_interrupted_evaluation(state, tb)
    progress = _Progress(self.config, self.recorder.read_metrics())
    cursor = _Cursor(state)
    # A run resumed after it stopped at its target does not train on.
    last_round = state.round_num if progress.stops() else self.config.rounds
    # Counted from here: restored rounds took no time in this process.
    self._reporter = StepProgress(self.config.log_name, self.config.rounds,
                                  state.round_num)
    try:
      for round_num in range(state.round_num + 1, last_round + 1):
        self._round(cursor, client_states, round_num, progress, tb)
        if progress.stops():
          logging.info("target accuracy %.4f reached at round %d",
                       self.config.target_accuracy, progress.reached)
          break
    except DivergenceError as e:
      # A diverged grid point is a result, not a crash: its summary says
      # so, tables show it and a rerun grid does not repeat it; the run
      # still stops with the error (and keeps its last good checkpoint).
      rounds_run = cursor.state.round_num
      on_divergence({**progress.fields(rounds_run),
                     "diverged_at_round": rounds_run + 1,
                     "divergence": str(e)})
      raise
    except (KeyboardInterrupt, RuntimeError) as e:
      if not is_interrupt(e):
        raise
      self._save_interrupted(cursor, client_states)
      raise as_interrupt(e) from None
    finally:
      self._reporter.close()
      tb.close()
    state, last_eval = cursor.state, cursor.last_eval
    if not last_eval:
      last_eval = self.evaluator.evaluate(state, state.round_num)
    return RoundLoopResult(state, client_states, last_eval,
                           progress.fields(state.round_num))

  def _round(self, cursor: "_Cursor", client_states: ClientStates,
             round_num: int, progress: _Progress,
             tb: TensorBoardLog) -> None:
    """Trains, evaluates, logs and checkpoints one round, moving `cursor`
    as soon as each step is done (Ctrl-C can come at any point)."""
    t0 = time.time()
    state, row = self.runner.train_round(cursor.state, client_states,
                                         round_num)
    row["round_seconds"] = time.time() - t0
    cursor.state, cursor.unlogged = state, row
    if self.config.evaluates(round_num):
      cursor.last_eval = self.evaluator.evaluate(state, round_num)
      row.update(cursor.last_eval)
    progress.add(round_num, row)
    self.recorder.log_metrics(round_num, row, "round")
    cursor.unlogged = None
    tb.write_row(round_num, row)
    _log_round(self._reporter, round_num, row)
    every = self.config.checkpoint_every
    if every and (round_num % every == 0 or round_num == self.config.rounds
                  or progress.stops()):
      self.checkpointer.save(state, client_states, self.tag)

  def _save_interrupted(self, cursor: "_Cursor",
                        client_states: ClientStates) -> None:
    """Ctrl-C: keeps the last completed round so --resume continues there."""
    state, unlogged_row = cursor.state, cursor.unlogged
    if unlogged_row is not None:
      # It trained but its evaluation was cut short: its training row is
      # logged, flagged, to match the checkpoint below, and --resume
      # evaluates the restored weights before going on.
      unlogged_row[_EVALUATION_INTERRUPTED] = 1
      self.recorder.log_metrics(state.round_num, unlogged_row, "round")
    if self.config.checkpoint_every and state.round_num:
      path = self.checkpointer.save(state, client_states, self.tag)
      logging.warning("interrupted; saved %s (round %d)", path,
                      state.round_num)

  def _finish_interrupted_evaluation(self, state: ServerState,
                                     tb: TensorBoardLog) -> None:
    """Evaluates a restored round whose evaluation Ctrl-C cut short."""
    rows = self.recorder.read_metrics()
    if not rows or not rows[-1].get(_EVALUATION_INTERRUPTED):
      return
    row = {k: v for k, v in rows[-1].items()
           if k not in ("round", "wall_seconds", _EVALUATION_INTERRUPTED)}
    if self.config.evaluates(state.round_num):
      row.update(self.evaluator.evaluate(state, state.round_num))
    self.recorder.drop_metrics_after(state.round_num - 1, "round")
    self.recorder.log_metrics(state.round_num, row, "round")
    tb.write_row(state.round_num, row)
    logging.info("round %d: evaluated after resume", state.round_num)


def diverged(checkpointer: Checkpointer, round_num: int, what: str,
             remedy: str) -> DivergenceError:
  """The error a runner raises when round `round_num` diverged, naming the
  last good checkpoint that --resume would start from."""
  latest = checkpointer.latest_readable()
  kept = f"; last good checkpoint: {latest}" if latest else ""
  return DivergenceError(f"training diverged at round {round_num} ({what}); "
                         f"{remedy}{kept}")
