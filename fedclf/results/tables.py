"""Markdown tables from run directories (their config.json and summary.json)."""

from __future__ import annotations

import json
import os
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

# Imported for its registration of the built-in partitioners.
from fedclf import partition as _partition  # noqa: F401  pylint: disable=unused-import
from fedclf.errors import UserError
from fedclf.plugin_config import param_fields
from fedclf.registry import PARTITIONERS
from fedclf.results import provenance
from fedclf.results.run_folder import is_moved_aside


def load_runs(runs_dir: str) -> List[Dict]:
  """Every finished run (a folder with summary.json) below `runs_dir`;
  runs that `--overwrite` moved aside are not results and are left out."""
  if not os.path.isdir(runs_dir):
    raise UserError(f"runs directory {runs_dir} does not exist")
  walked = []
  for root, dirs, files in os.walk(runs_dir):
    dirs[:] = [d for d in dirs if not is_moved_aside(d)]
    walked.append((root, files))
  runs = []
  for root, files in sorted(walked):
    if "summary.json" in files and "config.json" in files:
      with open(os.path.join(root, "summary.json")) as f:
        summary = json.load(f)
      with open(os.path.join(root, "config.json")) as f:
        config = json.load(f)
      runs.append({"name": os.path.relpath(root, runs_dir), "dir": root,
                   "summary": summary, "config": config})
  if not runs:
    raise UserError(f"no finished runs (summary.json) under {runs_dir}")
  return runs


def _command(config: Dict) -> str:
  # Paths as the reader's checkout has them, also in records made before
  # commands were recorded portably (provenance.readable_command).
  argv = provenance.readable_command(config.get("command") or [])
  if not argv:
    return ""
  # How the run was continued or its folder cleared is not part of it.
  args = [a for a in argv[1:]
          if not a.startswith(("--resume", "--overwrite"))]
  return "python -m " + " ".join([provenance.module_of(argv[0])] +
                                 [shlex.quote(a) for a in args])


# The unit of accuracies and F1 scores in table headers: fractions, not %.
FRACTION = "(0–1)"


def _fmt(value, digits=4):
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return "" if value is None else str(value)


def _is_federated(run: Dict) -> bool:
  return "algorithm" in run["summary"]


def results_table(runs: List[Dict], title: str) -> str:
  """Centralized and federated runs, each kind in its own table."""
  central = [r for r in runs if not _is_federated(r)]
  federated = [r for r in runs if _is_federated(r)]
  parts = [f"# {title}", ""]
  if central:
    parts.append(_centralized_rows(central))
  if federated:
    parts.append(_federated_rows(federated))
  parts.append(_commands(runs))
  return "\n".join(parts)


def centralized_table(runs: List[Dict], title: str) -> str:
  return "\n".join([f"# {title}", "", _centralized_rows(runs),
                    _commands(runs)])


def _federated_rows(runs: List[Dict]) -> str:
  lines = ["| run | algorithm | dataset | partition | clients (per round) | "
           f"rounds | test accuracy {FRACTION} | macro F1 {FRACTION} | "
           f"rounds to target | client accuracy p10 {FRACTION} | "
           "train time (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for run in runs:
    s = run["summary"]
    target = s.get("target_accuracy")
    reached = s.get("rounds_to_target")
    to_target = ("" if not target else
                 f"{reached} (to {target:.3f})" if reached else
                 f"not reached (to {target:.3f})")
    if s.get("diverged_at_round"):
      to_target = f"diverged at round {s['diverged_at_round']}"
    lines.append(
        f"| {run['name']} | {s.get('algorithm')} | "
        f"{s.get('dataset', {}).get('name', '')} | {s.get('partitioner')} | "
        f"{s.get('num_clients')} ({s.get('clients_per_round')}) | "
        f"{s.get('rounds_run')} | {_fmt(s.get('final_test_accuracy'))} | "
        f"{_fmt(s.get('final_test_macro_f1'))} | {to_target} | "
        f"{_fmt(s.get('final_client_accuracy_p10'))} | "
        f"{_fmt(s.get('train_seconds'), 0)} |")
  return "\n".join(lines) + "\n"


def _centralized_rows(runs: List[Dict]) -> str:
  lines = ["| run | dataset | model | "
           f"test accuracy {FRACTION} | macro F1 {FRACTION} | epochs | "
           "train time (s) | examples/s |",
           "|---|---|---|---|---|---|---|---|"]
  for run in runs:
    s = run["summary"]
    lines.append(
        f"| {run['name']} | {s.get('dataset', {}).get('name', '')} | "
        f"{s.get('model', '')} | {_fmt(s.get('test_accuracy'))} | "
        f"{_fmt(s.get('test_macro_f1'))} | {_fmt(s.get('epochs_run'))} | "
        f"{_fmt(s.get('train_seconds'), 0)} | "
        f"{_fmt(s.get('examples_per_second'), 0)} |")
  return "\n".join(lines) + "\n"


def _commands(runs: List[Dict]) -> str:
  lines = ["Commands (each run's exact command line, from its config.json):",
           ""]
  for run in runs:
    git = run["config"].get("git", {})
    lines.append(f"- `{run['name']}` (commit {git.get('commit') or 'n/a'}"
                 f"{', dirty tree' if git.get('dirty') else ''}):")
    lines.append(f"  `{_command(run['config'])}`")
  return "\n".join(lines) + "\n"


# A results README may end with analysis written by hand, below a line that
# holds only this rule; regenerating the tables keeps it.
HAND_WRITTEN_RULE = "---"


def _readme_parts(readme_path: str) -> Tuple[List[str], List[str]]:
  """An existing results README's lines split at its first line that is
  only `HAND_WRITTEN_RULE`: (generated part, hand-written part from that
  line on); both empty when there is no README."""
  if not os.path.exists(readme_path):
    return [], []
  with open(readme_path) as f:
    lines = f.read().splitlines(keepends=True)
  for i, line in enumerate(lines):
    if line.strip() == HAND_WRITTEN_RULE:
      return lines[:i], lines[i:]
  return lines, []


def hand_written_part(readme_path: str) -> str:
  """The hand-written tail of an existing results README (from its first
  line that is only `---`), prefixed with a blank line; "" if none."""
  _, hand_written = _readme_parts(readme_path)
  return "\n" + "".join(hand_written) if hand_written else ""


# The generated part of a results README ends with this line and the spec's
# path: it names the spec whose runs the tables show.
REGENERATE_PREFIX = "Regenerate: `python -m simulations.reproduce --spec="


def regenerate_line(spec_path: str) -> str:
  return f"{REGENERATE_PREFIX}{spec_path}`\n"


def table_owner(readme_path: str) -> Optional[str]:
  """The spec named by the generated part of an existing results README
  (its `regenerate_line`), or None: no README, or none written by
  simulations.reproduce."""
  generated, _ = _readme_parts(readme_path)
  for line in generated:
    if line.startswith(REGENERATE_PREFIX):
      return line[len(REGENERATE_PREFIX):].strip().rstrip("`")
  return None


def check_table_owner(out_dir: str, spec_path: str) -> None:
  """Refuses a spec whose out_dir holds another spec's tables.

  Two specs may share an out_dir (and so their finished runs), but the
  README, table.tex and plots show one spec's runs: rendering the second
  would silently replace the first's rows with its own.

  Raises:
    UserError: out_dir's README names another spec that still exists.
  """
  owner = table_owner(os.path.join(out_dir, "README.md"))
  # spec_path was just loaded, so it exists.
  if (owner is None or not os.path.exists(owner) or
      os.path.samefile(owner, spec_path)):
    return
  raise UserError(
      f"{out_dir} holds the tables of {owner} (its README's Regenerate "
      f"line); rendering {spec_path}'s there would replace them: run "
      f"--spec={owner} (with --only= for some of its runs), or give "
      f"{spec_path} its own out_dir")


# -- tables over seeds ------------------------------------------------------

# Flags that do not make a different setting: seeds of one setting differ
# in these (grid specs group their runs by the same list).
NON_SETTING_FLAGS = ("seed", "out_dir", "resume", "overwrite", "flagfile",
                     "plugin", "list", "data_dir", "checkpoint_every")


def run_flags(run: Dict) -> Dict:
  return dict(run["config"].get("config", {}).get("flags", {}))


def _flag_text(value) -> str:
  return json.dumps(value, sort_keys=True)


def distinguishing_flags(settings: List[Dict]) -> List[str]:
  """The flags that name settings (flag dicts) apart: every flag with
  differing words (method, dataset, partition...), then only as many of
  the differing numbers as still need telling apart, the one that splits
  the settings most first. A number that follows from a chosen flag (a
  training-set size fixed by the source dataset) is left out."""
  def classes(keys):
    return len({tuple(_flag_text(f.get(k)) for k in keys) for f in settings})

  varying = sorted(k for k in {k for f in settings for k in f}
                   if classes([k]) > 1)
  chosen = [k for k in varying if any(
      isinstance(f.get(k), (str, bool, list)) for f in settings)]
  numbers = [k for k in varying if k not in chosen]
  goal = classes(varying)
  while classes(chosen) < goal:
    best = max(numbers, key=lambda k: (classes(chosen + [k]),
                                       -numbers.index(k)))
    chosen.append(best)
    numbers.remove(best)
  return sorted(chosen)


def flags_label(flags: Dict, keys: Sequence[str]) -> str:
  """`k=v, ...` of `keys`; flags that are empty or unset are left out."""
  return ", ".join(f"{k}={_flag_value(flags[k])}" for k in keys
                   if flags.get(k) not in (None, "", []))


def _flag_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return str(value).lower() if isinstance(value, bool) else str(value)


def group_by_setting(runs: List[Dict],
                     setting_of: Optional[Dict[str, str]] = None
                     ) -> Dict[str, List[Dict]]:
  """Setting label -> its runs (the seeds of one setting).

  With `setting_of` (run name -> setting name, from a grid spec), the spec
  decides the groups and names the rows: a spec knows which of its runs
  differ only in seed, while a run recorded before a flag existed lacks
  that flag and would otherwise stand apart from later seeds of its
  setting. Rows then come in name order.

  Without it, runs whose recorded flags differ only in seed (and output
  paths) share a group; a run alone is named by its folder, a group of
  seeds by only the flags that tell the groups apart (empty values left
  out), e.g. `method=dann, source=mnist, target=mnist_m`.
  """
  if setting_of is not None:
    groups: Dict[str, List[Dict]] = {}
    for run in runs:
      groups.setdefault(setting_of.get(run["name"], run["name"]),
                        []).append(run)
    return dict(sorted(groups.items()))
  settings: Dict[str, Dict] = {}
  members: Dict[str, List[Dict]] = {}
  for run in runs:
    flags = {k: v for k, v in run_flags(run).items()
             if k not in NON_SETTING_FLAGS}
    key = _flag_text(flags)
    settings[key] = flags
    members.setdefault(key, []).append(run)
  keys = distinguishing_flags(list(settings.values()))
  labelled: Dict[str, List[Dict]] = {}
  for key, group in members.items():
    label = ((flags_label(settings[key], keys) if len(group) > 1 else "")
             or group[0]["name"])
    if label in labelled:  # only empty values set them apart
      label = f"{label} [{group[0]['name']}]"
    labelled[label] = group
  return labelled


def mean_std(values, counts: bool = False,
             digits: Optional[int] = None) -> str:
  """Mean ± sample std (None values left out); `counts` (rounds) print
  whole for one seed; `digits` fixes the decimals (else 4 below 10, 1
  above)."""
  values = [v for v in values if v is not None]
  if not values:
    return ""
  mean = sum(values) / len(values)
  std = (0.0 if len(values) == 1 else
         (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5)
  if digits is None:
    if len(values) == 1 and (counts or mean >= 10):
      return f"{mean:.0f}"
    digits = 4 if mean < 10 and not counts else 1
  if len(values) == 1:
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def seeds_covered(values) -> str:
  """' (k of n seeds)' when only k of a setting's n seeds have a value (a
  diverged seed has no final accuracy, only a divergence round), so that
  a mean over fewer seeds than the row's count says so; '' otherwise."""
  count = sum(v is not None for v in values)
  return f" ({count} of {len(values)} seeds)" if 0 < count < len(values) else ""


# A federated SSL run's "test accuracy" is its encoder's kNN accuracy (its
# summary also has it as final_knn_accuracy, which no classifier's has):
# the kNN column shows it, and "final accuracy" leaves it out.
FINAL_ACCURACY_KEYS = ("final_test_accuracy", "test_accuracy")


# Column title (with its unit) and the summary keys it reads, first found.
SEED_COLUMNS = (
    (f"final accuracy {FRACTION}", FINAL_ACCURACY_KEYS),
    (f"linear probe {FRACTION}", ("linear_probe_accuracy",)),
    (f"random-init probe {FRACTION}", ("random_init_linear_probe_accuracy",)),
    (f"kNN {FRACTION}", ("knn_accuracy", "final_knn_accuracy")),
    # tensorflow-similarity's retrieval of same-class training embeddings.
    (f"retrieval recall@1 {FRACTION}", ("retrieval_recall_at_1",)),
    (f"random-init recall@1 {FRACTION}",
     ("random_init_retrieval_recall_at_1",)),
    (f"retrieval mAP@R {FRACTION}", ("retrieval_map_at_r",)),
    (f"1% labels: fine-tune {FRACTION}", ("finetune_accuracy_1",)),
    (f"1% labels: supervised {FRACTION}", ("supervised_accuracy_1",)),
    (f"10% labels: fine-tune {FRACTION}", ("finetune_accuracy_10",)),
    (f"10% labels: supervised {FRACTION}", ("supervised_accuracy_10",)),
    ("rounds to target", ("rounds_to_target",)),
    (f"macro F1 {FRACTION}", ("final_test_macro_f1", "test_macro_f1")),
    # Personalization (--client_test_fraction): clients' own test parts,
    # scored with each client's personal model and with the global one.
    (f"personal accuracy mean {FRACTION}", ("final_personal_accuracy_mean",)),
    (f"personal accuracy p10 {FRACTION}", ("final_personal_accuracy_p10",)),
    (f"personal accuracy p90 {FRACTION}", ("final_personal_accuracy_p90",)),
    (f"global model on clients, mean {FRACTION}",
     ("final_global_on_clients_accuracy_mean",)),
    # Domain adaptation (simulations.domain_adaptation): "final accuracy"
    # is the target domain's; this is the source domain's.
    (f"source-domain accuracy {FRACTION}", ("source_accuracy",)),
    ("diverged at round", ("diverged_at_round",)),
    # Fairness across clients (--per_client_eval; q-FedAvg's measures).
    (f"client accuracy p10 {FRACTION}", ("final_client_accuracy_p10",)),
    # In points squared (percent accuracy), as q-FedAvg's paper reports it:
    # as a fraction an IID run's 5e-6 would print as 0.0000.
    ("client accuracy variance (points²)", ("final_client_accuracy_var",)),
)

# Summary values a column shows multiplied (fractions squared -> points²).
COLUMN_SCALES = {"final_client_accuracy_var": 1e4}

COUNT_KEYS = ("rounds_to_target", "diverged_at_round")


def _value(summary: Dict, keys) -> Optional[float]:
  for key in keys:
    if summary.get(key) is not None:
      return float(summary[key])
  return None


def _column_value(summary: Dict, keys) -> Optional[float]:
  """What a seed column shows of one run, scaled (None: none to show)."""
  if (keys == FINAL_ACCURACY_KEYS and
      summary.get("final_knn_accuracy") is not None):
    return None
  value = _value(summary, keys)
  return None if value is None else value * COLUMN_SCALES.get(keys[0], 1.0)


def seed_rows(runs: List[Dict], setting_of: Optional[Dict[str, str]] = None):
  """(header, rows) of mean ± std per setting (see `group_by_setting`);
  columns without any value are left out, and a FedSGD row (if any reached
  the target) gives the McMahan-style speed-up in rounds."""
  groups = group_by_setting(runs, setting_of)
  columns = [(title, keys) for title, keys in SEED_COLUMNS
             if any(_column_value(r["summary"], keys) is not None
                    for r in runs)]
  # As in McMahan et al.'s Table 2, each run is compared with the best
  # FedSGD run on the same data split (IID with IID, non-IID with non-IID).
  fedsgd: Dict[tuple, float] = {}
  for r in runs:
    rounds = _value(r["summary"], ("rounds_to_target",))
    if r["summary"].get("algorithm") == "fedsgd" and rounds:
      key = _data_split(r)
      fedsgd[key] = min(rounds, fedsgd.get(key, rounds))
  header = ["setting", "seeds"] + [_column_title(t, keys, runs)
                                    for t, keys in columns]
  if fedsgd:
    header.append("speed-up vs FedSGD (× fewer rounds)")
  rows = []
  for label, members in groups.items():
    row = [label, str(len(members))]
    for _, keys in columns:
      values = [_column_value(m["summary"], keys) for m in members]
      row.append(mean_std(values, counts=keys[0] in COUNT_KEYS)
                 + seeds_covered(values))
    if fedsgd:
      base = fedsgd.get(_data_split(members[0]))
      reached = [_value(m["summary"], ("rounds_to_target",))
                 for m in members]
      reached = [v for v in reached if v]
      row.append(f"{base / (sum(reached) / len(reached)):.1f}×"
                 if reached and base else "")
    rows.append(row)
  _add_upload_columns(header, rows, groups)
  return header, rows


def _compressed(run: Dict) -> bool:
  return run_flags(run).get("compression", "none") != "none"


def _add_upload_columns(header: List[str], rows: List[List[str]],
                        groups: Dict[str, List[Dict]]) -> None:
  """Tables that compare upload codecs (some run has --compression) get
  the total uploaded megabytes and their ratio to the mean of the
  uncompressed runs on the same data split."""
  runs = [m for members in groups.values() for m in members]
  if not any(_compressed(r) for r in runs):
    return
  key = ("total_upload_megabytes",)
  dense: Dict[tuple, List[float]] = {}
  for r in runs:
    if not _compressed(r) and _value(r["summary"], key) is not None:
      dense.setdefault(_data_split(r), []).append(_value(r["summary"], key))
  header += ["uploaded MB (10^6 bytes)", "MB ratio to uncompressed"]
  for row, members in zip(rows, groups.values()):
    values = [_value(m["summary"], key) for m in members]
    row.append(mean_std(values) + seeds_covered(values))
    values = [v for v in values if v is not None]
    base = dense.get(_data_split(members[0]))
    row.append(f"{(sum(values) / len(values)) / (sum(base) / len(base)):.3f}"
               if values and base else "")


def _column_title(title: str, keys, runs: List[Dict]) -> str:
  """The rounds-to-target column names its target when the runs share one
  (`rounds to 0.99 accuracy`)."""
  if keys != ("rounds_to_target",):
    return title
  targets = {r["summary"].get("target_accuracy") for r in runs
             if "rounds_to_target" in r["summary"]}
  if len(targets) == 1 and isinstance(next(iter(targets)), (int, float)):
    return f"rounds to {next(iter(targets)):g} accuracy"
  return title


def _partition_parameters(partition) -> Tuple[str, ...]:
  """The flags that shape `partition`'s split: its partitioner's params
  fields (none for one not registered in this process, e.g. a plugin's).
  Runs recorded before a field existed lack its flag and read as None."""
  if not isinstance(partition, str) or partition not in PARTITIONERS:
    return ()
  params_class = PARTITIONERS.params_class(partition)
  return tuple(f.name for f in param_fields(params_class)) if (
      params_class) else ()


def _data_split(run: Dict) -> tuple:
  flags = run_flags(run)
  partition = flags.get("partition")
  keys = ["dataset", "train_limit", "num_clients", "partition",
          *_partition_parameters(partition)]
  return tuple(json.dumps(flags.get(k), sort_keys=True) for k in keys)


SEED_TABLE_NOTE = (
    "Mean ± sample standard deviation over the seeds of each setting "
    "(`seeds` runs; one seed: its value). Accuracies and F1 scores are "
    "fractions (0–1), not percentages.")
ROUNDS_NOTE = " Rounds are federated communication rounds."


def seed_table(runs: List[Dict], title: str,
               setting_of: Optional[Dict[str, str]] = None) -> str:
  header, rows = seed_rows(runs, setting_of)
  note = SEED_TABLE_NOTE + (ROUNDS_NOTE if any("round" in h for h in header)
                            else "")
  lines = [f"# {title}", "", note, "",
           "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines) + "\n\n" + _commands(runs)


LATEX_NOTE = ("Mean ± sample standard deviation over seeds; accuracies "
              "and F1 scores are fractions (0–1).")

# In order: the backslash first, so the ones the others add stay.
_LATEX_ESCAPES = (("\\", "\\textbackslash{}"), ("$", "\\$"), ("#", "\\#"),
                  ("_", "\\_"), ("%", "\\%"), ("&", "\\&"),
                  ("±", "$\\pm$"), ("×", "$\\times$"), ("–", "--"))


def _latex(text: str) -> str:
  for plain, escaped in _LATEX_ESCAPES:
    text = text.replace(plain, escaped)
  return text


def latex_table(runs: List[Dict], title: str,
                setting_of: Optional[Dict[str, str]] = None) -> str:
  header, rows = seed_rows(runs, setting_of)
  lines = ["\\begin{table}[t]", "\\centering",
           f"\\caption{{{_latex(title)}. {_latex(LATEX_NOTE)}}}",
           "\\begin{tabular}{" + "l" * len(header) + "}", "\\toprule",
           " & ".join(_latex(h) for h in header) + " \\\\", "\\midrule"]
  lines += [" & ".join(_latex(c) for c in row) + " \\\\" for row in rows]
  lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
  return "\n".join(lines) + "\n"


# -- comparisons across binaries --------------------------------------------

def _load_run(run_dir: str) -> Dict:
  summary_path = os.path.join(run_dir, "summary.json")
  config_path = os.path.join(run_dir, "config.json")
  if not os.path.exists(summary_path) or not os.path.exists(config_path):
    raise UserError(f"{run_dir} is not a finished run (no summary.json or "
                    f"config.json)")
  with open(summary_path) as f:
    summary = json.load(f)
  with open(config_path) as f:
    config = json.load(f)
  return {"name": os.path.basename(os.path.normpath(run_dir)), "dir": run_dir,
          "summary": summary, "config": config}


def comparison_table(spec: Dict, spec_path: str) -> str:
  """One row per (label, run folder, summary metric): results of different
  binaries (centralized, federated, SSL) side by side on the same data.

  spec: {title: str, note: str (optional), rows: [{label, run, metric}]};
  run folders are relative to the working directory.
  """
  rows = spec.get("rows")
  if not isinstance(rows, list) or not rows:
    raise UserError(f"{spec_path}: a comparison needs a non-empty 'rows' "
                    f"list of {{label, run, metric}}")
  lines = [f"# {spec.get('title', 'Comparison')}", ""]
  if spec.get("note"):
    lines += [str(spec["note"]).strip(), ""]
  lines += [f"| method | test accuracy {FRACTION} | metric (summary.json) | "
            "run |", "|---|---|---|---|"]
  runs = []
  for row in rows:
    if not isinstance(row, dict) or not {"label", "run", "metric"} <= set(row):
      raise UserError(f"{spec_path}: every row needs label, run and metric")
    run = _load_run(str(row["run"]))
    value = run["summary"].get(row["metric"])
    if value is None:
      raise UserError(f"{row['run']}/summary.json has no {row['metric']!r}")
    lines.append(f"| {row['label']} | {float(value):.4f} | "
                 f"`{row['metric']}` | {row['run']} |")
    if all(r["name"] != str(row["run"]) for r in runs):
      runs.append({**run, "name": str(row["run"])})
  return "\n".join(lines) + "\n\n" + _commands(runs)
