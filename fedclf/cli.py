"""Helpers for fedclf's absl binaries (the only place that touches FLAGS).

Binaries stay thin: define flags with these helpers, turn them into config
dataclasses, call one library entry point, and let `run` convert user errors
into a one-line message with exit status 2.

Plugins' own hyper-parameters (`fedclf.plugin_config`) become flags by
generation: a binary calls `define_params_flags(ALGORITHMS, ...)` where it
defines its flags, and `params_from_flags(ALGORITHMS, name)` in main.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

from absl import app
from absl import flags
from absl import logging

from fedclf import plugin_config
from fedclf import plugin_manifest
from fedclf import plugins
from fedclf import process_exit
from fedclf import registry
from fedclf.errors import UserError
from fedclf.errors import as_interrupt
from fedclf.errors import disk_full_path
from fedclf.errors import interrupt_exit_code
from fedclf.errors import interrupt_message
from fedclf.errors import is_disk_full
from fedclf.errors import is_interrupt

USER_ERROR_EXIT = 2


def _startup_interrupt_hook(previous):
  """sys.excepthook for a Ctrl-C that came before `run` guards main: while
  the binary imports TensorFlow at its flag definitions, say, as when a
  grid is stopped just as it starts its next run. One line and exit 130
  instead of a traceback (os._exit: nothing has been written yet, and an
  excepthook cannot exit otherwise). Other errors: `previous`."""
  def hook(kind, value, tb):
    if not issubclass(kind, KeyboardInterrupt):
      previous(kind, value, tb)
      return
    try:
      print(interrupt_message(value), file=sys.stderr, flush=True)
      sys.stdout.flush()
    finally:
      os._exit(interrupt_exit_code(value))  # pylint: disable=protected-access
  hook.fedclf_hook = True
  return hook


# At import: the binaries import this module first.
if not getattr(sys.excepthook, "fedclf_hook", False):
  sys.excepthook = _startup_interrupt_hook(sys.excepthook)
process_exit.guard_startup_interrupts()

# TensorFlow's C++ log threshold (0 all, 1 no INFO, 2 no WARNING either, 3
# no ERROR either), read by TensorFlow once, at its first line. Set here,
# before any binary imports TensorFlow, unless the user chose one: 2 drops
# the INFO/WARNING start-up lines (oneDNN, CUDA drivers, CPU instructions,
# TensorRT) and keeps errors. TF_CPP_MIN_LOG_LEVEL=0 brings all back.
TF_LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
os.environ.setdefault(TF_LOG_LEVEL_VARIABLE, "2")

# Lines TensorFlow's import prints at ERROR level on every machine without a
# GPU driver (XLA registering its CUDA plugins twice): not errors of the
# run, so `import_tensorflow` drops them unless the log level is 0.
TF_IMPORT_NOISE = ("Unable to register cuDNN factory",
                   "Unable to register cuFFT factory",
                   "Unable to register cuBLAS factory")


def without_import_noise(text: str) -> str:
  """`text` (what TensorFlow's import wrote to stderr) less the lines of
  `TF_IMPORT_NOISE`."""
  return "".join(line for line in text.splitlines(keepends=True)
                 if not any(noise in line for noise in TF_IMPORT_NOISE))


def import_tensorflow() -> None:
  """Imports TensorFlow with stderr (fd 2, where its C++ code writes)
  captured, and writes back all but `TF_IMPORT_NOISE`: every other line,
  and an import error's traceback, stay visible."""
  if "tensorflow" in sys.modules:
    return
  if os.environ.get(TF_LOG_LEVEL_VARIABLE, "").strip() == "0":
    importlib.import_module("tensorflow")
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      importlib.import_module("tensorflow")
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      sys.stderr.write(without_import_noise(
          captured.read().decode("utf-8", errors="replace")))
      sys.stderr.flush()


def define_common_flags() -> None:
  flags.DEFINE_multi_string(
      "plugin", [], "Python module(s) to import for third-party plugins "
      "(repeatable); entry points in group 'fedclf.plugins' load too.")
  flags.DEFINE_bool("list", False,
                    "Print every registered name per kind and exit.")


def define_data_flags(default_dataset: str = "mnist") -> None:
  flags.DEFINE_string("dataset", default_dataset,
                      "Registered dataset name (see --list).")
  flags.DEFINE_string("data_dir", "",
                      "Data directory (default $FEDCLF_DATA_DIR, else "
                      "~/.cache/fedclf).")
  flags.DEFINE_string("dataset_path", "",
                      "image_folder: folder of class subfolders.")
  flags.DEFINE_integer("image_size", 0,
                       "Resize images to this square size (0 = native).")
  flags.DEFINE_integer("train_limit", 0,
                       "Use a seeded random slice of this many training "
                       "examples (0 = all).")
  flags.DEFINE_integer("test_limit", 0, "Same for the test set (0 = all).")
  flags.DEFINE_bool("download", True,
                    "Allow downloads when local files are missing.")


def define_input_scaling_flag() -> None:
  # Only for the binaries that train a plain classifier; the SSL and
  # adaptation binaries choose their own normalization.
  flags.DEFINE_enum("input_scaling", "standardize", ["standardize", "unit"],
                    "standardize: zero mean, unit variance per channel over "
                    "the training images; unit: pixels in [0, 1] as "
                    "loaded (recorded in summary.json for the exporters).")


def define_init_encoder_flags() -> None:
  """--init_encoder and --freeze_encoder (`fedclf.models.pretrained`)."""
  flags.DEFINE_string("init_encoder", "",
                      "A finished run folder (SSL, centralized, federated, "
                      "adaptation) whose encoder this model's encoder "
                      "starts from; same model, width, norm and input "
                      "shape. Empty: random initialisation.")
  flags.DEFINE_bool("freeze_encoder", False,
                    "With --init_encoder: keep the loaded encoder fixed and "
                    "train (federated: train and aggregate) the head only.")
  flags.DEFINE_bool("standardize_encoder_features", False,
                    "With --init_encoder: the head starts with a fixed "
                    "per-feature standardization, mean and std of the "
                    "loaded encoder's features over this run's training "
                    "images (federated: summed from each client's), as "
                    "the SSL linear probe does. SSL encoders' features "
                    "can have a large offset and a small spread that a "
                    "fresh head trained by SGD learns from slowly.")


def define_model_flags(default_norm: str, norm_help: str) -> None:
  flags.DEFINE_string("model", "cnn", "Registered model name (see --list).")
  flags.DEFINE_enum("norm", default_norm, ["batch", "group", "none"],
                    norm_help)
  flags.DEFINE_float("dropout", 0.0, "Dropout before the classifier head.")
  flags.DEFINE_float("width_multiplier", 1.0,
                     "Scales every hidden width of the model (a narrow "
                     "encoder, e.g. 0.5, to match a pretrained one).")
  flags.DEFINE_enum("weight_init", "keras", ["keras", "pytorch"],
                    "Initial weights: keras (each model's Keras "
                    "initialisers: Glorot or He kernels, zero biases) or "
                    "pytorch (PyTorch's nn.Linear / nn.Conv2d defaults: "
                    "kernel and bias uniform in +-1/sqrt(fan_in)), to "
                    "compare with results published from PyTorch code.")


def model_config_from_flags():
  from fedclf.models import ModelConfig  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  # Only the binaries with define_init_encoder_flags have the flag.
  standardize = ("standardize_encoder_features" in f and
                 f.standardize_encoder_features)
  return ModelConfig(norm=f.norm, dropout=f.dropout, seed=f.seed,
                     width_multiplier=f.width_multiplier,
                     standardize_features=standardize,
                     weight_init=f.weight_init)


def define_run_flags(default_out_dir: str, checkpoint_unit: str,
                     default_checkpoint_every: int, seed_help: str) -> None:
  """--checkpoint_every, --resume, --overwrite, --seed, --out_dir (every
  training binary; `run` claims --out_dir for them)."""
  flags.DEFINE_integer("checkpoint_every", default_checkpoint_every,
                       f"Checkpoint every N {checkpoint_unit} (0 = never).")
  flags.DEFINE_bool("resume", False,
                    "Resume the run in --out_dir from its checkpoints (its "
                    "setting must match; more rounds/epochs may be asked).")
  flags.DEFINE_integer("seed", 0, seed_help)
  flags.DEFINE_string("out_dir", default_out_dir, "Output directory.")
  define_overwrite_flag()


# The flag naming the entry of --out_dir that `claim_out_dir` claims (see
# `define_overwrite_flag`); None: it claims --out_dir itself.
_out_dir_entry_flag: Optional[str] = None


def define_overwrite_flag(entry_flag: str = "") -> None:
  """--overwrite; with --out_dir, `run` claims the folder for the binary.

  `entry_flag`: for a binary whose --out_dir collects one result folder per
  value of that flag (export: one per --model_name), the claim is on
  `<out_dir>/<value>` instead, so the other entries stay as they are and a
  used entry alone is refused, or moved aside with --overwrite.
  """
  global _out_dir_entry_flag
  _out_dir_entry_flag = entry_flag or None
  folder = f"<out_dir>/<{entry_flag}>" if entry_flag else "<out_dir>"
  flags.DEFINE_bool("overwrite", False,
                    f"If {folder} holds results, move it aside to "
                    f"{folder}.old-<time> (nothing is deleted) and start "
                    f"afresh.")


def _claimed_folder() -> str:
  """--out_dir, or its entry named by `_out_dir_entry_flag`."""
  f = flags.FLAGS
  if not _out_dir_entry_flag:
    return f.out_dir
  entry = f[_out_dir_entry_flag].value
  if not entry:
    raise UserError(f"--{_out_dir_entry_flag} is required")
  if entry in (".", "..") or os.sep in entry or (
      os.altsep and os.altsep in entry):
    raise UserError(f"--{_out_dir_entry_flag}={entry} must name one folder "
                    f"inside --out_dir")
  return os.path.join(f.out_dir, entry)


def claim_out_dir():
  """The claim on --out_dir (see fedclf.results.run_folder) for binaries
  with --out_dir and --overwrite, or on its entry (`define_overwrite_flag`);
  a no-op context for the others.

  Taken before the binary's main (by `run`, and by docs.guide.runner,
  which runs binaries in one process), so a used, locked or unwritable
  folder is refused before any data is loaded.
  """
  f = flags.FLAGS
  if "out_dir" not in f or "overwrite" not in f:
    return contextlib.nullcontext()
  from fedclf.results import run_folder  # pylint: disable=g-import-not-at-top
  can_resume = "resume" in f
  return run_folder.claim_run_folder(
      _claimed_folder(), run_folder.run_setting(flag_values_dict()),
      resume=can_resume and bool(f["resume"].value), overwrite=f.overwrite,
      can_resume=can_resume)


def data_config_from_flags(seed: int):
  from fedclf.data import DataConfig  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  return DataConfig(
      name=f.dataset, data_dir=f.data_dir, path=f.dataset_path,
      image_size=f.image_size, train_limit=f.train_limit,
      test_limit=f.test_limit, seed=seed, download=f.download)


def define_optimizer_flags(prefix: str, default_name: str, default_lr: float,
                           default_momentum: float = 0.9) -> None:
  """Defines --{prefix}optimizer, --{prefix}lr, ... (prefix '' or 'client_')."""
  # The names of fedclf.train.optimizers, from the manifest: that module
  # imports TensorFlow.
  choices = plugin_manifest.flag_choices()
  who = prefix.rstrip("_") or "the"
  flags.DEFINE_enum(f"{prefix}optimizer", default_name,
                    list(choices["optimizers"]),
                    f"Optimizer for {who} model updates.")
  flags.DEFINE_float(f"{prefix}lr", default_lr, "Peak learning rate.")
  flags.DEFINE_float(f"{prefix}momentum", default_momentum,
                     "Momentum (momentum/nesterov/rmsprop).")
  flags.DEFINE_float(f"{prefix}weight_decay", 0.0,
                     "Decoupled weight decay.")
  flags.DEFINE_enum(f"{prefix}lr_schedule", "constant",
                    list(choices["schedules"]), "Learning-rate schedule.")
  flags.DEFINE_float(f"{prefix}warmup_epochs", 0.0,
                     "Linear warm-up length in epochs.")
  flags.DEFINE_float(f"{prefix}step_epochs", 30.0,
                     "step schedule: decay every this many epochs.")
  flags.DEFINE_float(f"{prefix}step_gamma", 0.1, "step schedule: factor.")


def optimizer_config_from_flags(prefix: str):
  from fedclf.train.optimizers import OptimizerConfig  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  return OptimizerConfig(
      name=f[f"{prefix}optimizer"].value,
      learning_rate=f[f"{prefix}lr"].value,
      momentum=f[f"{prefix}momentum"].value,
      weight_decay=f[f"{prefix}weight_decay"].value,
      schedule=f[f"{prefix}lr_schedule"].value,
      warmup_epochs=f[f"{prefix}warmup_epochs"].value,
      step_epochs=f[f"{prefix}step_epochs"].value,
      step_gamma=f[f"{prefix}step_gamma"].value)


# The flags `define_params_flags` made, to tell them from a binary's own
# flag of the same name (and to define each only once).
_params_flags: Dict[str, flags.Flag] = {}
# The registry kinds whose built-in plugins' flags came from the manifest.
_manifest_kinds: Set[str] = set()


def _command_line_args(argv: Sequence[str]) -> List[str]:
  """The flags of a command line before any `--`, --flagfile contents
  included (absl's own expansion, so nesting and relative paths behave
  alike)."""
  args = list(argv[1:])
  try:
    args = flags.FLAGS.read_flags_from_files(args)
  except flags.Error:
    pass  # The real parse reports the unreadable flagfile.
  return args[:args.index("--")] if "--" in args else args


def plugins_named_in(argv: Sequence[str]) -> List[str]:
  """The `--plugin` values of a command line, --flagfile contents included."""
  args = _command_line_args(argv)
  modules = []
  for i, arg in enumerate(args):
    name, has_value, value = arg.lstrip("-").partition("=")
    if name != "plugin" or not arg.startswith("-"):
      continue
    if has_value:
      modules.append(value)
    elif i + 1 < len(args):
      modules.append(args[i + 1])
  return modules


# absl's help flags (app.define_help_flags), and ours that answers alike.
_ANSWER_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml", "list")


def _bool_flag_value(args: Sequence[str], name: str) -> bool:
  """The value the last of `--name`, `--noname`, `--name=false` ... in
  `args` gives boolean flag `name` (False when absent)."""
  value = False
  for arg in args:
    if not arg.startswith("-"):
      continue
    flag, has_value, text = arg.lstrip("-").partition("=")
    if flag == name:
      value = not has_value or text.lower() in ("true", "t", "1")
    elif flag == f"no{name}" and not has_value:
      value = False
  return value


def only_answers(argv: Sequence[str]) -> bool:
  """Whether a command line asks for help or --list instead of a run: it
  needs no TensorFlow."""
  args = _command_line_args(argv)
  return any(_bool_flag_value(args, name) for name in _ANSWER_FLAGS)


def _define_params_flag(spec: plugin_config.FlagSpec) -> flags.Flag:
  field = spec.field
  # flags.FLAGS is read now, not bound at import, so tests can swap it.
  values = flags.FLAGS
  if field.kind == plugin_config.ENUM:
    flags.DEFINE_enum(field.name, field.default, list(field.choices),
                      spec.help(), flag_values=values)
  elif field.kind == plugin_config.INT_TUPLE:
    # absl has no integer-list flag: the strings become ints in
    # `params_from_flags`, where a bad one is a UserError naming the flag.
    flags.DEFINE_list(field.name, [str(v) for v in field.default],
                      spec.help(), flag_values=values)
  else:
    define = {plugin_config.INT: flags.DEFINE_integer,
              plugin_config.FLOAT: flags.DEFINE_float,
              plugin_config.BOOL: flags.DEFINE_bool,
              plugin_config.STR: flags.DEFINE_string}[field.kind]
    define(field.name, field.default, spec.help(), flag_values=values)
  return values[field.name]


def define_params_flags(*registries: registry.Registry) -> None:
  """One flag per hyper-parameter of every plugin in `registries`, named as
  the params field (`--prox_mu`, `--dirichlet_alpha`, a plugin's own).

  Call it where the binary defines its flags, after its own: absl parses
  before `run` loads plugins, so this knows fedclf's own plugins from
  `fedclf.plugin_manifest` (without importing them and TensorFlow) and
  imports the `fedclf.plugins` entry points and the `--plugin` modules of
  the command line (`sys.argv`, flagfiles included; fedclf's plugins first
  then, as `load_plugins` does), so that `--helpfull` lists their flags and
  `--my_param=3` parses. Calling it again (after loading more plugins)
  defines only the flags that are new. A params class that is malformed, or
  a field clashing with another plugin's or with the binary's own flag,
  ends the binary with a one-line error naming both (exit 2).
  """
  try:
    named = plugins_named_in(sys.argv)
    if named or plugins.entry_point_targets():
      import_tensorflow()
      plugins.load_plugins(named)
    for name, spec in plugin_config.flag_specs_of(
        _plugin_fields(registries)).items():
      if name in flags.FLAGS:
        if flags.FLAGS[name] is _params_flags.get(name):
          continue
        raise plugin_config.ParamsDeclarationError(
            f"hyper-parameter {name!r} of {spec.describe_owners()} is "
            f"already a flag of "
            f"{flags.FLAGS.find_module_defining_flag(name)}: rename it")
      _params_flags[name] = _define_params_flag(spec)
  except (UserError, registry.RegistryError) as e:
    exit_with_user_error(str(e))


def _from_manifest(reg: registry.Registry) -> bool:
  """Whether `reg`'s built-in plugins are known only from the manifest
  (a registry of fedclf's, its plugins not imported yet)."""
  return (not plugins.builtins_loaded() and
          any(reg is known for known in registry.ALL_REGISTRIES))


def _plugin_fields(registries: Sequence[registry.Registry]
                  ) -> List[plugin_config.PluginFields]:
  """The params fields of every plugin of `registries`: those registered,
  and the built-in ones from the manifest while they are not (by registry,
  then by name, as `plugin_config.flag_specs` orders them)."""
  out = []
  for reg in registries:
    found = {p.name: p for p in plugin_config.registered_fields([reg])}
    if _from_manifest(reg):
      _manifest_kinds.add(reg.kind)
      found.update((e.name, e.plugin_fields())
                   for e in plugin_manifest.entries_of_kind(reg.kind)
                   if e.fields)
    out += [found[name] for name in sorted(found)]
  return out


def params_from_flags(kind: registry.Registry, name: str) -> Any:
  """The validated hyper-parameters of `kind`'s plugin `name` (its params
  dataclass, `NoParams()` if it declares none) from their flags.

  A set flag that belongs only to other plugins of the same kind (say
  --prox_mu with --algorithm=fedavg) draws a warning, not an error: grid
  specs set one flag set for several algorithms or partitioners (NIID-Bench
  sets --prox_mu and --dirichlet_alpha for all its runs), and their
  recorded commands must keep running.
  """
  params_class = plugin_config.params_class_of(kind, name)
  fields = plugin_config.param_fields(params_class)
  # Flags made from the manifest must be the plugin's: a developer who
  # changed its params without refreshing the manifest learns it here.
  stale = plugin_manifest.stale_message(kind.kind, name, fields)
  if stale and kind.kind in _manifest_kinds:
    raise UserError(stale)
  own = [f.name for f in fields]
  values = flags.FLAGS
  for flag_name, spec in plugin_config.flag_specs([kind]).items():
    if (flag_name not in own and flag_name in values and
        values[flag_name].present):
      logging.warning("--%s is set, but %s %s does not read it (a "
                      "hyper-parameter of %s)", flag_name, kind.kind, name,
                      spec.describe_owners())
  # A plugin loaded only after parsing (named in a file the pre-scan could
  # not read) has no flags: its defaults apply, rather than the value of
  # some other flag that happens to share a field's name.
  return plugin_config.build_params(
      params_class, {f.name: _params_flag_value(f) for f in fields
                     if f.name in values and
                     values[f.name] is _params_flags.get(f.name)},
      f"{kind.kind} {name}")


def _params_flag_value(field: plugin_config.ParamField) -> Any:
  """The field's flag value as the field's type (a list flag's strings as
  ints)."""
  value = flags.FLAGS[field.name].value
  if field.kind == plugin_config.INT_TUPLE:
    return plugin_config.parse_int_tuple(field.name, value)
  return value


def flag_values_dict() -> dict:
  """The binary's own flags (not absl's logging/help flags), for config.json."""
  f = flags.FLAGS
  values = {}
  for module, module_flags in f.flags_by_module_dict().items():
    if module.startswith("absl.") or "absl/" in module:
      continue
    for flag in module_flags:
      values[flag.name] = flag.value
  return values


def _parse_flags(argv: List[str]) -> List[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    prog = os.path.basename(argv[0]) if argv else "fedclf"
    # One line even when a value (e.g. from a flagfile) holds a line break.
    print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


def exit_with_user_error(message: str) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(USER_ERROR_EXIT)


def _run_main(main: Callable[[Sequence[str]], None],
              argv: Sequence[str]) -> None:
  """Plugins, --list, the run folder claim and `main`; a BrokenPipeError
  from a print to a closed stdout becomes OutputClosed (a logging call to
  one raises nothing: the SIGPIPE handler raises OutputClosed instead)."""
  try:
    # --list of fedclf's own plugins reads the manifest: no imports.
    if not flags.FLAGS.list or _user_plugins():
      import_tensorflow()  # Loaded already, unless for --list.
      plugins.load_plugins(flags.FLAGS.plugin)
    if flags.FLAGS.list:
      print(_describe_known_plugins())
    else:
      with claim_out_dir():
        main(argv)
    # Here, where a closed pipe is still caught: Python's own flush at exit
    # would print "Exception ignored ... BrokenPipeError" and exit 120.
    sys.stdout.flush()
  except BrokenPipeError:
    interrupt = process_exit.output_closed()
    if interrupt is None:
      raise
    raise interrupt from None


def _user_plugins() -> bool:
  """Whether this run has plugins besides fedclf's (--plugin, entry
  points)."""
  return bool([m for m in flags.FLAGS.plugin if m] or
              plugins.entry_point_targets())


def _describe_known_plugins() -> str:
  """`--list`: the registered names, and fedclf's own plugins from the
  manifest while they are not imported (`plugins.describe_all` once
  they are)."""
  names = []
  for reg in registry.ALL_REGISTRIES:
    kind_names = set(reg.names())
    if _from_manifest(reg):
      kind_names.update(e.name for e in
                        plugin_manifest.entries_of_kind(reg.kind))
    names.append((reg.kind, sorted(kind_names)))
  return plugins.describe_names(names)


def _newest_checkpoint(folder: str) -> Optional[str]:
  """The newest checkpoint below `folder` (in `checkpoints/` folders of
  the run and of its nested runs, or their stage subfolders), by time
  written; None if none."""
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if ".old-" not in d]
    if "checkpoints" in os.path.relpath(root, folder).split(os.sep):
      found += [os.path.join(root, f) for f in files
                if f.endswith((".index", ".npz")) and not f.startswith(".")]
  if not found:
    return None
  newest = max(found, key=os.path.getmtime)
  return newest[:-len(".index")] if newest.endswith(".index") else newest


def disk_full_message(error: BaseException, out_dir: str = "",
                      can_resume: bool = False,
                      can_overwrite: bool = False) -> str:
  """The one line for a run that found its disk full (`is_disk_full`):
  which file, and how to go on (`out_dir`: the run's folder, searched for
  its newest checkpoint; `can_resume`: the binary has --resume;
  `can_overwrite`: it claims its folder, so that a plain rerun is refused,
  and has --overwrite)."""
  path = disk_full_path(error)
  what = f" writing {path}" if path else ""
  checkpoint = _newest_checkpoint(out_dir) if out_dir else None
  if checkpoint and can_resume:
    then = f"then --resume continues from {checkpoint}"
  elif can_resume and out_dir:
    then = "then run it again with --resume"
  elif can_overwrite and out_dir:
    then = "then run it again with --overwrite (this run is moved aside)"
  else:
    then = "then run it again"
  return f"no space left on device{what}: free space, {then}"


def exit_on_stop(error: BaseException) -> None:
  """For an exception that ended a binary's main: an interrupt exits 130,
  143 or 141 and a full disk exits 2, each with one line on stderr; any
  other error returns (the caller re-raises it: a bug, with its
  traceback). The run folder's claim is already released (it is a context
  inside main's guard)."""
  if is_interrupt(error):
    _exit_interrupted(as_interrupt(error))
  if is_disk_full(error):
    logging.flush()
    f = flags.FLAGS
    out_dir = (f.out_dir if f.is_parsed() and "out_dir" in f else "") or ""
    exit_with_user_error(disk_full_message(error, out_dir, "resume" in f,
                                           "overwrite" in f))


def _exit_interrupted(error: KeyboardInterrupt) -> None:
  # A closed pipe not written to since (a Ctrl-C after `| head` ended)
  # would make the message and Python's final flush fail.
  process_exit.silence_closed_outputs()
  print(interrupt_message(error), file=sys.stderr)
  sys.exit(interrupt_exit_code(error))


def _guarded(main: Callable[[Sequence[str]], None],
             argv: Sequence[str]) -> None:
  """`main` on parsed flags; a user error or a full disk ends it with one
  line and exit status 2, an interrupt with its own status (130/143/141),
  see `exit_on_stop`."""
  if len(argv) > 1:
    exit_with_user_error(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    _run_main(main, argv)
  except (UserError, registry.RegistryError) as e:
    logging.flush()
    exit_with_user_error(str(e))
  except BaseException as e:  # pylint: disable=broad-except
    exit_on_stop(e)
    raise


def run(main: Callable[[Sequence[str]], None]) -> None:
  """app.run with one-line user errors (exit 2; a full disk too, naming the
  checkpoint --resume continues from), plugins and --list; Ctrl-C,
  SIGTERM and a closed stdout/stderr pipe stop `main` as a KeyboardInterrupt
  (its checkpoint saved) and exit 130, 143 and 141 (fedclf.process_exit)."""
  # TensorFlow must be imported before absl's app.run: imported inside it,
  # tf.keras builds functional models from graph placeholders
  # (SymbolicTensor) instead of KerasTensors and Flatten fails on the
  # unknown batch size. Help and --list build no model and need none (a
  # --plugin module may still import it).
  if not only_answers(sys.argv):
    import_tensorflow()
  process_exit.install()
  try:
    app.run(functools.partial(_guarded, main), flags_parser=_parse_flags)
  except KeyboardInterrupt as e:
    # One that came before main (parsing flags, importing plugins).
    _exit_interrupted(e)


def run_in_process(main: Callable[[Sequence[str]], None],
                   argv: Sequence[str]) -> int:
  """Runs one command line (`argv[0]` the program) of a binary whose flags
  are defined in this process, answering it as `run` would, and returns
  its exit status instead of exiting.

  For running many command lines of one binary in one process, where
  importing TensorFlow (seconds) would cost more than most of them take:
  the guide's build and the tests of binaries' answers. Flags are reset
  and parsed afresh; absl's app setup (--help handling, signal handlers)
  is not repeated.
  """
  flags.FLAGS.unparse_flags()
  try:
    _guarded(main, _parse_flags(list(argv)))
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  return 0


def print_json(obj) -> None:
  print(json.dumps(obj, indent=2, sort_keys=True, default=str))
