"""The fault-injection suite's binaries, process handling and checks.

Used by benchmarks/fault_injection.py (the table) and
tests/faults/fault_injection_test.py (its fast part in CI); see the former
for what each fault does. Only the standard library: the binaries run in
subprocesses, and the harness must not share their state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Set, Tuple

from benchmarks.run_numbers import folder_numbers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS_ROOT = ("full_disk", "read_only")
FEDERATED_ONLY = ("nan_client",)
_STEP = re.compile(r"(?:ckpt-|round_|epoch_)(\d+)")


class HarnessError(Exception):
  """The harness itself could not set a trial up (one line, exit 2)."""


@dataclasses.dataclass
class Outcome:
  ok: bool
  detail: str
  data: Dict[str, object] = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------ binaries


@dataclasses.dataclass(frozen=True)
class Binary:
  """One binary in one tiny but real configuration.

  kind: "run" (a training binary with --out_dir/--resume/--overwrite),
  "grid" (simulations.reproduce: a spec, rerun to continue) or "export"
  (fedclf.export of a finished centralized run).
  """
  name: str
  module: str
  flags: Tuple[str, ...]
  kind: str = "run"
  federated: bool = False
  slow: bool = False
  nan_flags: Tuple[str, ...] = ()

  def describe(self) -> str:
    if self.kind == "grid":
      return (f"python -m {self.module} --spec=SPEC (SPEC: "
              f"{json.dumps(GRID_SPEC)})")
    return " ".join(["python -m", self.module, *self.flags])

  def resume_args(self) -> Tuple[str, ...]:
    return ("--resume",) if self.kind == "run" else ()

  def restart_args(self) -> Tuple[str, ...]:
    """How a stopped run is started again: --resume; the export has no
    --resume, and its claimed folder refuses a plain rerun: --overwrite
    (the stopped export's folder moved aside); the grid: a plain rerun."""
    return {"run": ("--resume",), "export": ("--overwrite",),
            "grid": ()}[self.kind]

  def claimed_dir(self, trial: str) -> str:
    """The folder the binary claims (refuses to reuse without --resume or
    --overwrite): its result folder; the export's entry in it."""
    if self.kind != "export":
      return self.result_dir(trial)
    name = next(f.split("=", 1)[1] for f in self.flags
                if f.startswith("--model_name="))
    return os.path.join(self.result_dir(trial), name)

  def result_dir(self, trial: str) -> str:
    """The folder whose numbers are compared and whose md5 is guarded."""
    return os.path.join(trial, {"run": "run", "grid": "grid",
                                "export": "results"}[self.kind])

  def argv(self, trial: str, extra: Sequence[str] = (),
           out: Optional[str] = None) -> List[str]:
    out = out or self.result_dir(trial)
    if self.kind == "grid":
      # Beside, not inside, the trial: its folder may be full or read-only.
      specs = os.path.join(tempfile.gettempdir(), "fault_injection_specs")
      os.makedirs(specs, exist_ok=True)
      spec = os.path.join(specs, hashlib.md5(out.encode()).hexdigest() +
                          ".yaml")
      with open(spec, "w") as f:
        json.dump(dict(GRID_SPEC, out_dir=out), f)  # JSON is YAML
      return [sys.executable, "-m", self.module, f"--spec={spec}", *extra]
    if self.kind == "export":
      return [sys.executable, "-m", self.module, *self.flags,
              f"--run_dir={os.path.join(trial, 'source')}",
              f"--export_dir={os.path.join(trial, 'exports')}",
              f"--out_dir={out}", *extra]
    return [sys.executable, "-m", self.module, *self.flags,
            f"--out_dir={out}", *extra]


_TINY_DOMAINS = ("--source=mnist", "--target=usps", "--model=mlp",
                 "--train_limit=400", "--target_train_limit=300",
                 "--test_limit=200", "--checkpoint_every=1", "--seed=3")
_FEDERATED = ("--dataset=digits", "--model=mlp", "--num_clients=6",
              "--clients_per_round=4", "--checkpoint_every=1",
              "--eval_every=2", "--per_client_eval=0",
              "--local_batch_size=20", "--client_lr=0.05", "--seed=3")
_NAN = ("--plugin=benchmarks.fault_plugins", "--algorithm=nan_client_clipped",
        "--nan_client=1", "--clip_norm=5", "--clients_per_round=6")
GRID_SPEC = {"binary": "baselines.centralized",
             "common": {"dataset": "digits", "model": "mlp", "epochs": 6,
                        "batch_size": 32, "checkpoint_every": 1},
             "grid": {"seed": [0, 1, 2]}}

BINARIES: Dict[str, Binary] = {b.name: b for b in (
    Binary("centralized", "baselines.centralized",
           ("--dataset=digits", "--model=mlp", "--epochs=20",
            "--batch_size=32", "--lr_schedule=cosine",
            "--checkpoint_every=1", "--seed=3")),
    Binary("federated_local", "simulations.federated",
           (*_FEDERATED, "--rounds=12", "--backend=local"), federated=True,
           nan_flags=_NAN),
    Binary("federated_tff", "simulations.federated",
           (*_FEDERATED, "--rounds=6", "--backend=tff"), federated=True,
           slow=True, nan_flags=_NAN),
    Binary("ssl_pretrain", "simulations.ssl_pretrain",
           ("--dataset=digits", "--model=mlp", "--width_multiplier=0.5",
            "--method=simclr", "--projection_dim=16", "--hidden_dim=32",
            "--epochs=12", "--batch_size=16", "--checkpoint_every=1",
            "--probe_epochs=2", "--label_fractions=0.1",
            "--finetune_epochs=1", "--embedding_points=0", "--seed=3")),
    Binary("domain_adaptation_centralized", "simulations.domain_adaptation",
           ("--mode=centralized", "--method=dann", "--epochs=6",
            "--dann_hidden=16", *_TINY_DOMAINS)),
    Binary("domain_adaptation_federated", "simulations.domain_adaptation",
           ("--mode=federated", "--method=dann", "--num_clients=4",
            "--clients_per_round=4", "--rounds=8", "--eval_rounds=4",
            "--dann_hidden=16", *_TINY_DOMAINS), federated=True),
    Binary("reproduce", "simulations.reproduce", (), kind="grid"),
    Binary("export", "fedclf.export",
           ("--model_name=digits_mlp", "--formats=saved_model,tflite",
            "--test_limit=200", "--representative_examples=50"),
           kind="export"),
)}


def applies(binary: Binary, fault: str) -> bool:
  # The NaN client is an --algorithm plugin: domain adaptation's federated
  # mode federates by FedAvg only (it refuses --algorithm).
  return fault not in FEDERATED_ONLY or bool(binary.nan_flags)


# ------------------------------------------------------------------- folders


def folder_md5(folder: str, skip: Sequence[str] = ()) -> str:
  """md5 over sorted relative paths and file bytes (names in `skip`, at
  any depth, left out)."""
  digest = hashlib.md5()
  entries = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if d not in skip]
    entries += [os.path.join(root, f) for f in files if f not in skip]
  for path in sorted(entries):
    digest.update(os.path.relpath(path, folder).encode() + b"\0")
    with open(path, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()


def compare(got: Dict[str, float], want: Dict[str, float]) -> str:
  """'' when equal bit for bit, else the first difference."""
  if not want:
    return "the reference has no numbers"
  for key in sorted(set(want) | set(got)):
    a, b = want.get(key), got.get(key)
    if a is None or b is None:
      return f"{key} only in {'the reference' if b is None else 'this run'}"
    if a != b and not (math.isnan(a) and math.isnan(b)):
      return f"{key}: {b!r} (reference {a!r})"
  return ""


def checkpoint_steps(folder: str) -> Set[Tuple[str, int]]:
  """(checkpoint folder, step) of every checkpoint below `folder`: in a
  `checkpoints` folder or one of its subfolders (DANN's
  checkpoints/dann/)."""
  steps = set()
  for root, _, files in os.walk(folder):
    if "checkpoints" not in os.path.relpath(root, folder).split(os.sep):
      continue
    for name in files:
      match = _STEP.match(name)
      if match:
        steps.add((root, int(match.group(1))))
  return steps


def broken_json(folder: str) -> List[str]:
  """JSON files and metrics.jsonl lines below `folder` that do not parse."""
  bad = []
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      if not name.endswith((".json", ".jsonl")):
        continue
      try:
        with open(path) as f:
          if name.endswith(".jsonl"):
            for line in f:
              if line.strip():
                json.loads(line)
          else:
            json.load(f)
      except (ValueError, OSError) as e:
        bad.append(f"{os.path.relpath(path, folder)} ({type(e).__name__})")
  return bad


def copy_run(source: str, target: str) -> None:
  if os.path.exists(target):
    shutil.rmtree(target)
  shutil.copytree(source, target, symlinks=True)


def write_text(path: str, text: str) -> None:
  """Atomic write, so an interrupted run leaves the previous file whole."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(f"{path}.tmp", "w") as f:
    f.write(text)
  os.replace(f"{path}.tmp", path)


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def git_state(outputs: Sequence[str] = ()) -> Dict[str, object]:
  """The checkout's commit and whether tracked files differ from it, the
  suite's own `outputs` (the table a --merge run rewrites) left out."""
  def git(*args: str) -> str:
    return subprocess.run(["git", "-C", ROOT, *args], capture_output=True,
                          text=True, check=False).stdout
  mine = {os.path.relpath(os.path.abspath(p), ROOT) for p in outputs}
  changed = [line[3:] for line in git(
      "status", "--porcelain", "--untracked-files=no").splitlines()
             if line[3:] not in mine]
  return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(changed),
          "dirty_files": changed[:20]}


def cell_safe(text: str) -> str:
  return " ".join(str(text).split()).replace("|", "\\|")[:400]


# -------------------------------------------------------------------- mounts

_MOUNTS: List[str] = []


def _mount(*args: str) -> None:
  proc = subprocess.run(["mount", *args], capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    raise HarnessError(f"mount {' '.join(args)}: {proc.stderr.strip()}")


def fill_filesystem(folder: str) -> None:
  """Writes zeros into `folder` until its filesystem is full."""
  # Unbuffered: a buffered file's close would fail again on the full disk.
  try:
    with open(os.path.join(folder, ".filler"), "wb", buffering=0) as f:
      while True:
        f.write(b"\0" * 4096)
  except OSError:
    pass


def mount_tmpfs(folder: str, size_bytes: int) -> None:
  os.makedirs(folder, exist_ok=True)
  _mount("-t", "tmpfs", "-o", f"size={max(size_bytes, 4096)}", "tmpfs",
         folder)
  _MOUNTS.append(folder)


def make_read_only(folder: str) -> None:
  """A read-only bind mount of `folder` onto itself (root ignores modes)."""
  _mount("--bind", folder, folder)
  _MOUNTS.append(folder)
  _mount("-o", "remount,bind,ro", folder)


def unmount_all() -> None:
  while _MOUNTS:
    subprocess.run(["umount", "-l", _MOUNTS.pop()], capture_output=True,
                   check=False)


# ----------------------------------------------------------------- processes


@dataclasses.dataclass
class Result:
  rc: int
  stderr: str
  seconds: float

  @property
  def traceback(self) -> bool:
    return "Traceback (most recent call last)" in self.stderr

  @property
  def error_line(self) -> str:
    """The binary's one-line message ('error: ...'), else its last line."""
    # absl's log lines (I/W/E/F + date) are not the message.
    lines = [l for l in self.stderr.splitlines() if l.strip() and
             not re.match(r"[IWEF]\d{4} ", l)]
    errors = [l for l in lines if l.startswith("error:")]
    return (errors or lines or [""])[-1].strip()

  def one_line_refusal(self) -> bool:
    errors = [l for l in self.stderr.splitlines() if l.startswith("error:")]
    return self.rc == 2 and not self.traceback and len(errors) == 1

  def describe(self) -> str:
    if self.rc == 0:
      return "exit 0"
    tb = ", with a traceback" if self.traceback else ""
    return f"exit {self.rc}{tb}: {self.error_line[:200]}"


def _default_signals() -> None:
  # A suite started with nohup or `&` ignores SIGINT, and its children
  # would inherit that and never see the sigint fault.
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_DFL)


class Proc:
  """A binary running with stderr in a file (no pipe to fill up)."""

  def __init__(self, argv: List[str], log: str):
    self.log = log
    self.started = time.monotonic()
    with open(log, "w") as err:
      self.popen = subprocess.Popen(
          argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
          start_new_session=True, preexec_fn=_default_signals)

  def running(self) -> bool:
    return self.popen.poll() is None

  def signal(self, sig: int) -> None:
    if self.running():
      self.popen.send_signal(sig)

  def wait(self, timeout: float) -> Result:
    try:
      rc = self.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(self.popen.pid, signal.SIGKILL)
      self.popen.wait()
      rc = -999
    with open(self.log, errors="replace") as f:
      text = f.read()
    if rc == -999:
      text += f"\nerror: (harness) timed out after {timeout} s"
    return Result(rc, text, round(time.monotonic() - self.started, 1))


# ------------------------------------------------------------------- context


@dataclasses.dataclass
class Reference:
  """A binary's uninterrupted run: its folder, numbers and timing."""
  trial: str
  numbers: Dict[str, float]
  seconds: float
  span: float  # from its first checkpoint (export: first file) to its exit
  size: int  # bytes of its result (export: of its exports)


def folder_bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(r, f))
             for r, _, files in os.walk(folder) for f in files)


def file_md5s(folder: str) -> Dict[str, str]:
  found = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, folder)] = hashlib.md5(
            f.read()).hexdigest()
  return found


def changed(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
  """Files of `before` whose bytes changed or that are gone."""
  return sorted(p for p, h in before.items() if after.get(p) != h)


class Context:
  """Work folder, process launching and the per-binary reference runs."""

  def __init__(self, work: str, timeout: int, kills: int):
    self.work, self.timeout, self.kills = work, timeout, kills
    self._references: Dict[str, Reference] = {}
    self._logs = 0

  def trial_dir(self, binary: Binary, fault: str, trial: int) -> str:
    folder = os.path.join(self.work, binary.name, f"{fault}_{trial}")
    if os.path.exists(folder):
      shutil.rmtree(folder)
    os.makedirs(folder)
    return folder

  def start(self, binary: Binary, trial: str, extra: Sequence[str] = (),
            out: Optional[str] = None) -> Proc:
    self._logs += 1
    # Logs outside the trial, whose folder may be full or read-only.
    logs = os.path.join(self.work, "logs")
    os.makedirs(logs, exist_ok=True)
    log = os.path.join(logs, f"{self._logs:04d}.err")
    return Proc(binary.argv(trial, extra, out), log)

  def run(self, binary: Binary, trial: str, extra: Sequence[str] = (),
          out: Optional[str] = None) -> Result:
    return self.start(binary, trial, extra, out).wait(self.timeout)

  def progress(self, binary: Binary, trial: str) -> Set:
    """Checkpoints written so far (export: files of its export folder)."""
    if binary.kind == "export":
      exports = os.path.join(trial, "exports")
      return {os.path.join(r, f) for r, _, fs in os.walk(exports)
              for f in fs}
    return checkpoint_steps(binary.result_dir(trial))

  def wait_progress(self, proc: Proc, binary: Binary, trial: str,
                    seen: Set, count: int = 1) -> bool:
    """Waits until `count` checkpoints beyond `seen` exist; False when the
    process ended first."""
    deadline = time.monotonic() + self.timeout
    while proc.running() and time.monotonic() < deadline:
      if len(self.progress(binary, trial) - seen) >= count:
        return True
      time.sleep(0.02)
    return False

  def prepare(self, binary: Binary, trial: str) -> None:
    """What a trial needs before its first run (the export: its source)."""
    if binary.kind == "export":
      source = self.reference(BINARIES["centralized"])
      copy_run(BINARIES["centralized"].result_dir(source.trial),
               os.path.join(trial, "source"))

  def finished(self, binary: Binary, trial: str) -> None:
    """A copy of the reference's finished run(s) into `trial`."""
    ref = self.reference(binary)
    names = (["source", "exports", "results"] if binary.kind == "export"
             else [os.path.basename(binary.result_dir(trial))])
    for name in names:
      copy_run(os.path.join(ref.trial, name), os.path.join(trial, name))

  def reference(self, binary: Binary) -> Reference:
    if binary.name in self._references:
      return self._references[binary.name]
    trial = self.trial_dir(binary, "reference", 0)
    self.prepare(binary, trial)
    print(f"  {binary.name}: reference run", flush=True)
    proc = self.start(binary, trial)
    self.wait_progress(proc, binary, trial, set())
    first = time.monotonic()
    result = proc.wait(self.timeout)
    if result.rc != 0:
      raise HarnessError(f"{binary.name}'s reference run failed: "
                         f"{result.describe()}")
    size_of = (os.path.join(trial, "exports") if binary.kind == "export"
               else binary.result_dir(trial))
    ref = Reference(trial, folder_numbers(binary.result_dir(trial)), result.seconds,
                    round(time.monotonic() - first, 2),
                    folder_bytes(size_of))
    self._references[binary.name] = ref
    return ref

  def reference_record(self) -> Dict[str, object]:
    return {name: {"seconds": r.seconds, "span_after_first_checkpoint":
                   r.span, "bytes": r.size, "numbers": len(r.numbers)}
            for name, r in self._references.items()}


def signal_group(proc: Proc, sig: int) -> None:
  """`sig` to the binary's process group (its grid children and TFF
  workers too), as a terminal's Ctrl-C or a job scheduler sends it."""
  if proc.running():
    try:
      os.killpg(proc.popen.pid, sig)
    except ProcessLookupError:
      pass


def verdict(problems: List[str], data: Dict[str, object]) -> Outcome:
  return Outcome(not problems, "; ".join(problems) or
                 "nothing lost, same final result", data)


def check_result(ctx: Context, binary: Binary, trial: str,
                 problems: List[str], what: str) -> None:
  """Appends a problem when the trial's numbers differ from the
  reference's (and, for the export, when its source run changed)."""
  ref = ctx.reference(binary)
  diff = compare(folder_numbers(binary.result_dir(trial)), ref.numbers)
  if diff:
    problems.append(f"{what}: differs from the uninterrupted run: {diff}")
  if binary.kind == "export":
    source = BINARIES["centralized"].result_dir(
        ctx.reference(BINARIES["centralized"]).trial)
    if folder_md5(source) != folder_md5(os.path.join(trial, "source")):
      problems.append("the exported run's folder changed (md5)")
