r"""Refactor parity: the same short runs on two commits give the same metrics.

A redesign that promises "behaviour is unchanged" is checked by running one
short case per results family (the demo, the centralized baseline, McMahan,
NIID-Bench, adaptive server optimizers, SSL centralized and federated,
domain adaptation centralized and federated; local and tff backends) on the
commit before the redesign and on the redesigned code, with the same seed,
and comparing every numeric metric they write.

Record the baseline, then the code under test (--repo is the checkout whose
code runs the cases; the tool itself can live in either):

  python -m benchmarks.refactor_parity --repo=/work/wt/baseline \
      --out=/work/parity/baseline.json
  python -m benchmarks.refactor_parity --repo=. --out=/work/parity/new.json \
      [--flag_overrides=overrides.json] [--cases=demo,centralized_mnist] \
      [--resume]

then compare (exit status 1 when any case differs):

  python -m benchmarks.refactor_parity \
      --compare=/work/parity/baseline.json,/work/parity/new.json \
      --report=results/refactor_parity.md

Set FEDCLF_DATA_DIR (the shared data) first. The 17 cases take about 9
minutes on 2 shared CPU cores; every case is a fresh process. Running the
baseline twice and comparing the two files shows that every case is
deterministic (at da2068e on 2 cores: all 17 bitwise equal), so a
difference after the redesign is the code's. Compare recordings made on
the same machine: the local backend's default --parallel_clients follows
the core count.

A flag renamed by the redesign goes into --flag_overrides, a JSON object
mapping a case name to the full replacement flag list; the recorded command
of each case shows what actually ran.

Each case writes into a fresh temporary --out_dir; the metrics are the
numeric leaves of every summary.json and every row of every metrics.jsonl
under it (the demo's subruns included), plus the Markdown tables of a
README.md the binary writes (the demo's table), without wall-clock fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from benchmarks.run_numbers import folder_numbers
from benchmarks.run_numbers import measures_machine

# Only absl and the standard library: this tool runs other commits' code in
# subprocesses and must not depend on the fedclf package it is checking.

flags.DEFINE_string("repo", "", "Repository whose code runs the cases "
                    "(the cases run with this as the working directory).")
flags.DEFINE_string("out", "", "JSON file of the collected metrics.")
flags.DEFINE_list("cases", [],
                  "Run (or --compare) only these cases (default: all).")
flags.DEFINE_bool("resume", False,
                  "Keep the cases that --out already holds (same commit, "
                  "same command) and run only the others.")
flags.DEFINE_string("flag_overrides", "",
                    "JSON file: case name -> replacement flag list, for "
                    "code whose flags were renamed.")
flags.DEFINE_integer("case_timeout", 600, "Seconds before a case is killed.")
flags.DEFINE_bool("keep_runs", False,
                  "Keep each case's out_dir (printed) instead of deleting "
                  "it.")
flags.DEFINE_bool("dry_run", False, "Print the commands and exit.")
flags.DEFINE_list("compare", [],
                  "OLD.json,NEW.json: compare two recordings instead of "
                  "running.")
flags.DEFINE_string("report", "results/refactor_parity.md",
                    "--compare: Markdown report.")
flags.DEFINE_float("atol", 1e-5,
                   "--compare: absolute tolerance (a case's own atol, when "
                   "set in the table, replaces it).")

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Case:
  """One short run: a committed spec's command, shrunk.

  Attributes:
    name: unique key in the recordings and the report.
    binary: module run with `python -m`.
    flags: the command's flags, except --out_dir (the tool gives each case a
      fresh one).
    spec: where the flags come from (the spec and its run).
    atol: this case's tolerance, when it needs another than --atol (say why
      next to the case).
  """
  name: str
  binary: str
  flags: Tuple[str, ...]
  spec: str
  atol: Optional[float] = None


def _flags(**values) -> Tuple[str, ...]:
  """--key=value flags in the spellings simulations.reproduce uses."""
  def text(value) -> str:
    if isinstance(value, bool):
      return "true" if value else "false"
    if isinstance(value, (list, tuple)):
      return ",".join(str(v) for v in value)
    return str(value)
  return tuple(f"--{k}={text(v)}" for k, v in values.items())


# Every case keeps its spec's binary, algorithm, model, partition and method
# and shrinks only the size: data slices, clients, rounds or epochs, and
# the evaluation and checkpoint periods that would otherwise never fire.
_BASELINES = dict(model="cnn", optimizer="momentum", lr_schedule="cosine",
                  val_fraction=0.1, seed=0, epochs=2, train_limit=1000,
                  test_limit=500)
_MCMAHAN = dict(dataset="mnist", model="cnn", num_clients=10,
                clients_per_round=5, client_optimizer="sgd",
                target_accuracy=0.99, stop_at_target=True, per_client_eval=0,
                checkpoint_every=1, seed=0, train_limit=1000, test_limit=500)
_NIID_BENCH = dict(dataset="fashion_mnist", model="lenet5", num_clients=4,
                   clients_per_round=4, rounds=2, local_epochs=2,
                   local_batch_size=64, client_optimizer="momentum",
                   client_lr=0.01, client_momentum=0.9, prox_mu=0.01,
                   dirichlet_alpha=0.5, labels_per_client=2,
                   per_client_eval=4, checkpoint_every=1, max_train_loss=100,
                   seed=0, train_limit=1000, test_limit=500)
_ADAPTIVE = dict(dataset="fashion_mnist", model="lenet5",
                 partition="dirichlet", dirichlet_alpha=0.1, num_clients=10,
                 clients_per_round=5, rounds=3, local_epochs=1,
                 local_batch_size=32, client_lr=0.05, eval_every=1,
                 per_client_eval=5, checkpoint_every=1, seed=0,
                 train_limit=1000, test_limit=500)
_DA = dict(model="lenet5", epochs=2, batch_size=64, optimizer="momentum",
           lr=0.01, dann_anneal_lr=True, normalization="per_domain",
           target_labels_per_class=10, finetune_epochs=2, finetune_lr=0.001,
           eval_every=1, checkpoint_every=1, source="mnist", target="usps",
           train_limit=600, target_train_limit=500, test_limit=300, seed=0)
# The spec's data sizes and 2 local epochs instead of 1: with less, the
# model after the one warm-up round is never 90% sure of a USPS image and
# self-training pseudo-labels nothing (it labels ~180, then ~640 images in
# rounds 2 and 3 with these flags).
_DA_FEDERATED = dict(federated=True, source="mnist", target="usps",
                     model="lenet5", train_limit=2000,
                     target_train_limit=1800, test_limit=300, num_clients=4,
                     clients_per_round=4, rounds=3, local_epochs=2,
                     local_batch_size=32,
                     client_lr=0.05, normalization="per_domain",
                     dann_weight=0.3, warmup_rounds=1,
                     pseudo_label_threshold=0.9, eval_rounds=1,
                     checkpoint_every=1, seed=0)

CASES: Tuple[Case, ...] = (
    Case("demo", "simulations.demo", _flags(rounds=2, epochs=2),
         "make demo (README quick start)"),
    Case("centralized_mnist", "baselines.centralized",
         _flags(**_BASELINES, dataset="mnist", batch_size=64, lr=0.05,
                weight_decay=0),
         "experiments/baselines.yaml mnist_cnn"),
    Case("centralized_usps_augment", "baselines.centralized",
         _flags(**_BASELINES, dataset="usps", batch_size=32, lr=0.02,
                augment=["crop", "rotate"]),
         "experiments/baselines.yaml usps_cnn"),
    Case("mcmahan_fedavg_shards", "simulations.federated",
         _flags(**_MCMAHAN, algorithm="fedavg", partition="shards",
                shards_per_client=2, local_epochs=5, local_batch_size=10,
                client_lr=0.1, rounds=2),
         "experiments/mcmahan.yaml fedavg_shards_e5_b10_lr0.1"),
    Case("mcmahan_fedsgd_iid", "simulations.federated",
         _flags(**_MCMAHAN, algorithm="fedsgd", partition="iid",
                client_lr=0.2, rounds=4, eval_every=2),
         "experiments/mcmahan.yaml fedsgd_iid_lr0.2"),
    Case("mcmahan_fedavg_iid_tff", "simulations.federated",
         _flags(**{**_MCMAHAN, "num_clients": 5, "clients_per_round": 3,
                   "train_limit": 500, "test_limit": 300},
                algorithm="fedavg", partition="iid", local_epochs=1,
                local_batch_size=10, client_lr=0.1, rounds=2,
                backend="tff"),
         "experiments/mcmahan.yaml fedavg_iid_e5_b10_lr0.1, --backend=tff"),
    Case("niid_fedprox_dirichlet", "simulations.federated",
         _flags(**_NIID_BENCH, algorithm="fedprox", partition="dirichlet"),
         "experiments/niid_bench_extended.yaml fedprox_dirichlet"),
    Case("niid_scaffold_labels_per_client", "simulations.federated",
         _flags(**_NIID_BENCH, algorithm="scaffold",
                partition="labels_per_client"),
         "experiments/niid_bench_extended.yaml scaffold_labels_per_client"),
    Case("adaptive_fedyogi", "simulations.federated",
         _flags(**_ADAPTIVE, algorithm="fedyogi", server_lr=0.03),
         "experiments/adaptive.yaml fedyogi_slr0.03"),
    Case("adaptive_fedadam", "simulations.federated",
         _flags(**_ADAPTIVE, algorithm="fedadam", server_lr=0.01),
         "experiments/adaptive.yaml fedadam_slr0.01"),
    Case("ssl_centralized_simclr", "simulations.ssl_pretrain",
         _flags(dataset="mnist", model="cnn", method="simclr", epochs=2,
                batch_size=128, lr=0.001, label_fractions=[0.01, 0.1],
                checkpoint_every=1, seed=0, train_limit=1000, test_limit=500,
                probe_epochs=2, finetune_epochs=2, embedding_points=0),
         "experiments/ssl_centralized.yaml mnist_simclr"),
    Case("ssl_federated_simclr", "simulations.federated",
         _flags(dataset="mnist", model="cnn", algorithm="fedavg",
                objective="simclr", partition="dirichlet",
                dirichlet_alpha=0.1, num_clients=4, clients_per_round=4,
                rounds=2, local_epochs=1, local_batch_size=64,
                client_optimizer="momentum", client_lr=0.05,
                client_momentum=0.9, eval_every=1, checkpoint_every=1,
                seed=0, train_limit=800, test_limit=400),
         "experiments/ssl_federated.yaml mnist_dir0.1_fedavg_simclr"),
    Case("da_source_only", "simulations.domain_adaptation",
         _flags(**_DA, method="source_only"),
         "experiments/domain_adaptation.yaml mnist_usps_source_only_s0"),
    Case("da_dann", "simulations.domain_adaptation",
         _flags(**_DA, method="dann"),
         "experiments/domain_adaptation.yaml mnist_usps_dann_s0"),
    Case("da_federated_source_only", "simulations.domain_adaptation",
         _flags(**_DA_FEDERATED, method="source_only"),
         "experiments/domain_adaptation_federated.yaml "
         "mnist_usps_fedavg_source_only_s0"),
    Case("da_federated_dann", "simulations.domain_adaptation",
         _flags(**_DA_FEDERATED, method="dann"),
         "experiments/domain_adaptation_federated.yaml "
         "mnist_usps_fedavg_dann_s0"),
    Case("da_federated_self_training", "simulations.domain_adaptation",
         _flags(**_DA_FEDERATED, method="self_training"),
         "experiments/domain_adaptation_federated.yaml "
         "mnist_usps_fedavg_self_training_s0"),
)

# Markdown table columns that measure the machine (the demo's table).
_WALL_CLOCK_COLUMN = re.compile(r"seconds|examples/s|time", re.IGNORECASE)


class ParityError(Exception):
  """Bad input to the tool: one line, exit status 2."""


# ---------------------------------------------------------------- collecting


def markdown_tables(text: str) -> List[str]:
  """The rows of the Markdown tables in text, wall-clock columns removed."""
  rows: List[str] = []
  drop: List[int] = []
  header_next = True
  for line in text.splitlines():
    if not line.startswith("|"):
      header_next = True
      continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if header_next:
      drop = [i for i, c in enumerate(cells) if _WALL_CLOCK_COLUMN.search(c)]
      header_next = False
    rows.append("| " + " | ".join(
        c for i, c in enumerate(cells) if i not in drop) + " |")
  return rows


def collect_metrics(out_dir: str) -> Tuple[Dict[str, float], List[str]]:
  """Every metric of every run under out_dir (`run_numbers.folder_numbers`)
  and the rows of its README.md tables, prefixed by the run's folder."""
  tables: List[str] = []
  for root, dirs, files in os.walk(out_dir):
    dirs.sort()  # a stable order for the tables
    run = os.path.relpath(root, out_dir)
    run = "" if run == "." else run + "/"
    if "README.md" in files:
      with open(os.path.join(root, "README.md")) as f:
        tables += [f"{run}README.md {row}"
                   for row in markdown_tables(f.read())]
  return folder_numbers(out_dir), tables


# ------------------------------------------------------------------- running


def git_state(repo: str) -> Dict[str, object]:
  """The repo's commit and whether its tree has uncommitted changes."""
  def git(*args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True,
                          text=True, check=True).stdout.strip()
  return {"commit": git("rev-parse", "HEAD"),
          "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def imported_fedclf(repo: str, env: Dict[str, str]) -> str:
  """Where `import fedclf` resolves with cwd=repo (must be inside repo).

  The interpreter may have another checkout installed in editable mode;
  `python -m` puts the working directory first on sys.path, and this
  checks that it wins.
  """
  proc = subprocess.run(
      [sys.executable, "-c", "import fedclf; print(fedclf.__file__)"],
      cwd=repo, env=env, capture_output=True, text=True, check=True)
  path = os.path.realpath(proc.stdout.strip())
  if not path.startswith(os.path.realpath(repo) + os.sep):
    raise ParityError(f"with cwd={repo}, fedclf imports from {path}, not "
                      f"from {repo}")
  return path


def case_flags(case: Case, overrides: Dict[str, List[str]]) -> List[str]:
  return list(overrides.get(case.name, case.flags))


def command_text(binary: str, case_argv: Sequence[str]) -> str:
  return shlex.join(["python", "-m", binary, *case_argv])


def run_case(case: Case, argv: List[str], repo: str, env: Dict[str, str],
             timeout: int, keep: bool) -> Dict[str, object]:
  """Runs one case into a fresh out_dir; returns its record."""
  out_dir = tempfile.mkdtemp(prefix=f"parity_{case.name}_")
  record: Dict[str, object] = {"binary": case.binary, "flags": argv,
                               "command": command_text(case.binary, argv)}
  start = time.monotonic()
  try:
    proc = subprocess.run(
        [sys.executable, "-m", case.binary, *argv, f"--out_dir={out_dir}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    record["seconds"] = round(time.monotonic() - start, 1)
    record["returncode"] = proc.returncode
    if proc.returncode != 0:
      record["status"] = "failed"
      record["error"] = proc.stderr[-3000:]
      return record
    metrics, tables = collect_metrics(out_dir)
    if not metrics:
      record["status"] = "failed"
      record["error"] = "no summary.json or metrics.jsonl in the out_dir"
      return record
    record.update(status="ok", metrics=metrics, tables=tables)
    return record
  except subprocess.TimeoutExpired:
    record["seconds"] = round(time.monotonic() - start, 1)
    record.update(status="failed", error=f"timed out after {timeout} s")
    return record
  finally:
    if keep:
      print(f"  kept {out_dir}", flush=True)
    else:
      shutil.rmtree(out_dir, ignore_errors=True)


def write_json(path: str, obj) -> None:
  """Atomic write, so an interrupted run leaves the previous file whole."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def load_json(path: str):
  if not os.path.exists(path):
    raise ParityError(f"{path} does not exist")
  with open(path) as f:
    return json.load(f)


def select_cases(names: Sequence[str]) -> List[Case]:
  known = {c.name: c for c in CASES}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ParityError(f"unknown case(s) {', '.join(unknown)}; known: "
                      f"{', '.join(known)}")
  return [known[n] for n in names] if names else list(CASES)


def load_overrides(path: str) -> Dict[str, List[str]]:
  if not path:
    return {}
  overrides = load_json(path)
  known = {c.name for c in CASES}
  if not isinstance(overrides, dict) or not all(
      isinstance(v, list) and all(isinstance(a, str) for a in v)
      for v in overrides.values()):
    raise ParityError(f"{path}: expected an object of case name -> list of "
                      f"flag strings")
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ParityError(f"{path}: unknown case(s) {', '.join(unknown)}")
  return overrides


def run_cases(repo: str, out: str, cases: Sequence[Case],
              overrides: Dict[str, List[str]], resume: bool, timeout: int,
              keep: bool) -> bool:
  """Runs the cases on repo's code into out; True when all succeeded."""
  repo = os.path.abspath(repo)
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "FEDCLF_DATA_DIR" not in env:
    # Without it a binary looks in ~/.cache/fedclf and may try to download.
    raise ParityError("set FEDCLF_DATA_DIR to the shared data directory")
  state = git_state(repo)
  recording = {"repo": repo, **state,
               "fedclf": imported_fedclf(repo, env),
               "python": sys.executable, "cpu_count": os.cpu_count(),
               "data_dir": env["FEDCLF_DATA_DIR"],
               "started_utc": datetime.datetime.now(
                   datetime.timezone.utc).isoformat(timespec="seconds"),
               "cases": {}}
  if resume and os.path.exists(out):
    previous = load_json(out)
    if (previous.get("commit"), previous.get("dirty")) != (
        state["commit"], state["dirty"]):
      raise ParityError(f"{out} was recorded at commit "
                        f"{previous.get('commit')} (dirty: "
                        f"{previous.get('dirty')}); {repo} is at "
                        f"{state['commit']} (dirty: {state['dirty']}): "
                        f"record into a new file instead of --resume")
    recording["cases"] = previous.get("cases", {})
    recording["started_utc"] = previous.get("started_utc",
                                            recording["started_utc"])
  ok = True
  for case in cases:
    argv = case_flags(case, overrides)
    done = recording["cases"].get(case.name)
    if (done and done.get("status") == "ok" and
        done.get("flags") == argv and done.get("binary") == case.binary):
      print(f"{case.name}: already recorded, skipped", flush=True)
      continue
    print(f"{case.name}: {command_text(case.binary, argv)}", flush=True)
    record = run_case(case, argv, repo, env, timeout, keep)
    recording["cases"][case.name] = record
    write_json(out, recording)
    if record["status"] == "ok":
      print(f"  ok, {len(record['metrics'])} metrics, "
            f"{record['seconds']} s", flush=True)
    else:
      ok = False
      print(f"  FAILED ({record.get('seconds')} s): "
            f"{record['error'][-1500:]}", flush=True)
  return ok


# ----------------------------------------------------------------- comparing


@dataclasses.dataclass
class CaseComparison:
  """How one case's metrics on the new code relate to the old."""
  name: str
  command: str
  compared: int = 0
  max_diff: float = 0.0
  max_key: str = ""
  differing: List[Tuple[str, float, float]] = dataclasses.field(
      default_factory=list)
  missing: List[str] = dataclasses.field(default_factory=list)
  added: List[str] = dataclasses.field(default_factory=list)
  table_diff: List[str] = dataclasses.field(default_factory=list)
  problem: str = ""  # a case that did not run on one side
  atol: float = 0.0

  @property
  def same(self) -> bool:
    return not (self.problem or self.differing or self.missing or
                self.table_diff)


def _diff(old: float, new: float) -> float:
  if math.isnan(old) and math.isnan(new):
    return 0.0
  if old == new:  # equal infinities too
    return 0.0
  return abs(new - old)  # nan or inf when only one side is finite


# Keys the redesign renamed on purpose (old name -> new name), compared
# under the new name and listed in the report. DANN's hyper-parameters
# became its plugin params, named as their flags (`--dann_gamma`), and the
# summary's `dann` block echoes them under those names.
RENAMED_KEYS = {
    f"summary.json:dann/{old}": f"summary.json:dann/{new}"
    for old, new in (("alpha", "dann_alpha"), ("anneal_lr", "dann_anneal_lr"),
                     ("beta", "dann_beta"), ("gamma", "dann_gamma"),
                     ("domain_weight", "dann_weight"),
                     ("domain_hidden[0]", "dann_hidden[0]"),
                     ("domain_hidden[1]", "dann_hidden[1]"))}


def compare_case(name: str, old: Optional[Dict], new: Optional[Dict],
                 atol: float) -> CaseComparison:
  """Compares one case's records (either may be absent)."""
  command = (new or old or {}).get("command", "")
  result = CaseComparison(name, command, atol=atol)
  if old and new and old.get("command") != new.get("command"):
    result.command = f"{old.get('command')} → {new.get('command')}"
  for side, record in (("old", old), ("new", new)):
    if record is None:
      result.problem = f"not run on the {side} code"
      return result
    if record.get("status") != "ok":
      error = " ".join(str(record.get("error", "")).split())
      result.problem = f"failed on the {side} code: {error[-300:]}"
      return result
  old_m = {RENAMED_KEYS.get(k, k): v for k, v in old["metrics"].items()
           if not measures_machine(k)}
  new_m = {k: v for k, v in new["metrics"].items() if not measures_machine(k)}
  result.missing = sorted(set(old_m) - set(new_m))
  result.added = sorted(set(new_m) - set(old_m))
  for key in sorted(set(old_m) & set(new_m)):
    diff = _diff(old_m[key], new_m[key])
    result.compared += 1
    if not diff <= atol:  # also true for nan
      result.differing.append((key, old_m[key], new_m[key]))
    if not diff <= result.max_diff:
      result.max_diff, result.max_key = diff, key
  old_t, new_t = old.get("tables", []), new.get("tables", [])
  if old_t != new_t:
    result.table_diff = ([f"- old: {r}" for r in old_t if r not in new_t] +
                         [f"+ new: {r}" for r in new_t if r not in old_t])
    if not result.table_diff:
      result.table_diff = ["(same rows, another order)"]
  return result


def compare_recordings(old: Dict, new: Dict, default_atol: float,
                       only: Sequence[str] = ()) -> List[CaseComparison]:
  """One comparison per case of either recording (or of only), in the
  table's order."""
  atols = {c.name: c.atol for c in CASES if c.atol is not None}
  order = [c.name for c in CASES]
  names = list(only) or list(old.get("cases", {})) + [
      n for n in new.get("cases", {}) if n not in old.get("cases", {})]
  names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
  return [compare_case(n, old["cases"].get(n), new["cases"].get(n),
                       atols.get(n, default_atol)) for n in names]


def _fmt(x: float) -> str:
  return f"{x:.3g}" if x else "0"


def _describe(path: str, recording: Dict) -> str:
  dirty = " (with uncommitted changes)" if recording.get("dirty") else ""
  return (f"`{path}`: commit `{recording.get('commit')}`{dirty}, repo "
          f"`{recording.get('repo')}`, recorded {recording.get('started_utc')}"
          f" on {recording.get('cpu_count')} cores")


def report_markdown(old_path: str, new_path: str, old: Dict, new: Dict,
                    comparisons: Sequence[CaseComparison],
                    default_atol: float) -> str:
  """The parity report: one row per case, then what differs."""
  same = sum(c.same for c in comparisons)
  lines = [
      "# Refactor parity", "",
      "The same short command per results family, run on two checkouts "
      "with the same seed (`python -m benchmarks.refactor_parity`); every "
      "numeric field of every `summary.json` and of every `metrics.jsonl` "
      "row the run writes is compared, and the Markdown table of a "
      "`README.md` it writes (the demo's) row by row, except wall-clock "
      "fields (names with seconds, per_second, time, wall, memory, pid, ...). "
      "Strings (names, paths, commits) are not compared.", "",
      f"- old: {_describe(old_path, old)}",
      f"- new: {_describe(new_path, new)}",
      f"- tolerance: absolute difference <= {default_atol:g} "
      f"(a case's own where the table says so); integers must match.",
      f"- renamed on purpose, compared under the new name: "
      f"{', '.join(f'`{a}` → `{b}`' for a, b in RENAMED_KEYS.items())}.",
      f"- result: **{same} of {len(comparisons)} cases the same**.",
      "- regenerate: `python -m benchmarks.refactor_parity --repo=DIR "
      "--out=FILE.json` on a checkout of each commit, then "
      f"`python -m benchmarks.refactor_parity --compare={old_path},"
      f"{new_path} --report=results/refactor_parity.md`.", "",
      "| case | command | metrics compared | max abs difference | "
      "verdict |", "|---|---|---|---|---|"]
  for c in comparisons:
    if c.problem:
      verdict = f"**{c.problem}**"
    elif c.same:
      verdict = "same" + (f" (atol {c.atol:g})" if c.atol != default_atol
                          else "")
    else:
      parts = []
      if c.differing:
        parts.append(f"{len(c.differing)} differ")
      if c.missing:
        parts.append(f"{len(c.missing)} missing in new")
      if c.table_diff:
        parts.append("table differs")
      verdict = f"**DIFFERS** ({', '.join(parts)})"
    extra = f" (+{len(c.added)} new only)" if c.added else ""
    where = f" (`{c.max_key}`)" if c.max_diff else ""
    lines.append(f"| {c.name} | `{c.command}` | {c.compared}{extra} | "
                 f"{_fmt(c.max_diff)}{where} | {verdict} |")
  for c in comparisons:
    if c.same or c.problem:
      continue
    lines += ["", f"## {c.name}", ""]
    for key, a, b in c.differing[:20]:
      lines.append(f"- `{key}`: {a!r} → {b!r} (|diff| "
                   f"{_fmt(_diff(a, b))})")
    if len(c.differing) > 20:
      lines.append(f"- ... and {len(c.differing) - 20} more")
    for key in c.missing[:20]:
      lines.append(f"- missing in new: `{key}`")
    if len(c.missing) > 20:
      lines.append(f"- ... and {len(c.missing) - 20} more missing")
    lines += [f"- table {r}" for r in c.table_diff]
  return "\n".join(lines) + "\n"


def compare_files(old_path: str, new_path: str, report: str, atol: float,
                  only: Sequence[str] = ()) -> bool:
  """Writes the report; True when every case (of only) is the same."""
  old, new = load_json(old_path), load_json(new_path)
  comparisons = compare_recordings(old, new, atol, only)
  text = report_markdown(old_path, new_path, old, new, comparisons, atol)
  os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
  with open(report, "w") as f:
    f.write(text)
  print(text)
  return all(c.same for c in comparisons)


# ---------------------------------------------------------------------- main


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    if FLAGS.compare:
      if len(FLAGS.compare) != 2:
        raise ParityError("--compare takes OLD.json,NEW.json")
      same = compare_files(*FLAGS.compare, FLAGS.report, FLAGS.atol,
                           FLAGS.cases)
      sys.exit(0 if same else 1)
    cases = select_cases(FLAGS.cases)
    overrides = load_overrides(FLAGS.flag_overrides)
    if FLAGS.dry_run:
      for case in cases:
        command = command_text(case.binary, case_flags(case, overrides))
        print(f"{case.name}: {command}")
      return
    if not FLAGS.repo or not FLAGS.out:
      raise ParityError("give --repo and --out (or --compare)")
    ok = run_cases(FLAGS.repo, FLAGS.out, cases, overrides, FLAGS.resume,
                   FLAGS.case_timeout, FLAGS.keep_runs)
    sys.exit(0 if ok else 1)
  except ParityError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
