"""What a reader needs to recover a run's code and command from its folder.

- Commands are recorded with portable paths: a path inside a fedclf
  checkout (a folder with `.git` and `fedclf/__init__.py`) relative to
  that checkout's root, since every checkout has the same layout; other
  absolute paths stay absolute, with the home folder written `~`. Old
  records, made before this, are read the same way (`readable_command`).
- A run started from a checkout with uncommitted changes gets the diff
  (`source_patch`): `git apply` of it on the recorded commit recovers the
  code that ran.
- Writing results into a folder whose results are committed, from such a
  checkout, draws a warning, or a refusal when asked
  (`check_clean_for_results`).

This module runs git but writes nothing itself (fedclf.results.record
writes the patch beside config.json), so record.py can import it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Iterable, List, Optional, Sequence

from absl import logging

import fedclf
from fedclf.errors import UserError

# A patch bigger than this is cut down (see `source_patch`): results folders
# are committed, and a diff that large is rarely code.
PATCH_CAP_BYTES = 5 * 1024 * 1024
# The untracked files that can change what a run computes: code, flagfiles,
# experiment specs, packaging. Others (notes, data, run outputs) are left out.
CODE_SUFFIXES = (".py", ".yaml", ".yml", ".cfg", ".toml", ".csv")
# The top-level folders a binary lives in (`python -m <folder>.<module>`).
_CODE_FOLDERS = ("simulations", "baselines", "benchmarks", "fedclf")
# How many changed files a warning names.
_NAMED_FILES = 5
_GIT_TIMEOUT_S = 30
# A diff `git apply` takes, whatever the user's git config says (colour,
# external diff tools, no or mnemonic prefixes, diffs relative to a folder).
_DIFF = ("diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
         "--src-prefix=a/", "--dst-prefix=b/", "--no-relative")


def code_root() -> str:
  """The folder that holds the running fedclf package (a checkout's root)."""
  return os.path.dirname(os.path.dirname(os.path.abspath(fedclf.__file__)))


# -- portable paths in commands ------------------------------------------------

def checkout_of(path: str) -> Optional[str]:
  """The root of the fedclf checkout that holds the absolute `path` (which
  need not exist), or None."""
  folder = path
  while True:
    if (os.path.exists(os.path.join(folder, ".git")) and
        os.path.isfile(os.path.join(folder, "fedclf", "__init__.py"))):
      return folder
    parent = os.path.dirname(folder)
    if parent == folder:
      return None
    folder = parent


def portable_path(path: str, roots: Sequence[str] = ()) -> str:
  """`path` as a record shows it: relative to the checkout that holds it
  (or to the first of `roots` that does), else absolute with `~` for the
  home folder. Relative paths are returned as they are."""
  if not os.path.isabs(path):
    return path
  path = os.path.normpath(path)
  for root in [*roots, checkout_of(path)]:
    if root and (path == root or path.startswith(root.rstrip(os.sep) +
                                                 os.sep)):
      return os.path.relpath(path, root)
  home = os.path.expanduser("~")
  if home not in ("", os.sep) and path.startswith(home + os.sep):
    return "~" + path[len(home):]
  return path


def _portable_value(value: str, roots: Sequence[str]) -> str:
  # Comma lists (DEFINE_list flags) may hold several paths.
  return ",".join(portable_path(v, roots) for v in value.split(","))


def portable_command(argv: Sequence[str], roots: Sequence[str] = ()
                     ) -> List[str]:
  """`argv` with every absolute path made portable (`portable_path`): the
  program, `--flag=value` values and the values of `--flag value`."""
  out = []
  for i, arg in enumerate(argv):
    if i > 0 and arg.startswith("-"):
      name, eq, value = arg.partition("=")
      out.append(name + eq + _portable_value(value, roots) if eq else arg)
    else:
      out.append(_portable_value(arg, roots))
  return out


def _root_above(path: str, anchors: Sequence[str], last: bool = False
                ) -> Optional[str]:
  """The folder above the first (or `last`) of `anchors` in the absolute
  `path`."""
  if not os.path.isabs(path):
    return None
  parts = os.path.normpath(path).split(os.sep)
  hits = [i for i, part in enumerate(parts) if i >= 2 and part in anchors]
  if not hits:
    return None
  return os.sep.join(parts[:hits[-1] if last else hits[0]])


def recorded_roots(argv: Sequence[str]) -> List[str]:
  """The checkout roots an old record's absolute paths imply, for records
  made on another machine (`checkout_of` cannot see those): the folder
  above the binary's (`<root>/simulations/federated.py`; the last such
  folder, as the checkout itself may be named `fedclf`) and the one above
  `results` in --out_dir (results are written under <root>/results/)."""
  found = [_root_above(argv[0], _CODE_FOLDERS, last=True)] if argv else []
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--out_dir="):
      found.append(_root_above(arg.partition("=")[2], ("results",)))
    elif arg == "--out_dir" and i + 1 < len(argv):
      found.append(_root_above(argv[i + 1], ("results",)))
  return [root for root in found if root]


def readable_command(argv: Sequence[str]) -> List[str]:
  """A recorded command (old or new) with portable paths."""
  return portable_command(argv, recorded_roots(argv))


def module_of(program: str) -> str:
  """The module `python -m` runs for a recorded program path
  (`simulations/federated.py` -> `simulations.federated`,
  `fedclf/export/__main__.py` -> `fedclf.export`)."""
  if not program.endswith(".py"):
    return program
  parts = os.path.normpath(program[:-3]).split(os.sep)
  starts = [i for i, p in enumerate(parts) if p in _CODE_FOLDERS]
  # The last: a checkout may be named like its package (fedclf/fedclf/).
  parts = parts[starts[-1]:] if starts else parts[-2:]
  if parts[-1] == "__main__":
    parts = parts[:-1]
  return ".".join(parts)


# -- git ----------------------------------------------------------------------

def _git(repo_root: str, *args: str, ok: Iterable[int] = (0,)) -> bytes:
  """git's stdout; raises subprocess.SubprocessError (or OSError: no git)
  when git fails."""
  proc = subprocess.run(["git", *args], cwd=repo_root, capture_output=True,
                        timeout=_GIT_TIMEOUT_S, check=False)
  if proc.returncode not in ok:
    raise subprocess.CalledProcessError(proc.returncode, ["git", *args],
                                        proc.stdout, proc.stderr)
  return proc.stdout


def _names(output: bytes) -> List[str]:
  return [n for n in output.decode(errors="surrogateescape").split("\0") if n]


def head_commit(repo_root: str) -> str:
  """The commit `repo_root` has checked out."""
  return _git(repo_root, "rev-parse", "HEAD").decode().strip()


def changed_files(repo_root: str) -> List[str]:
  """Tracked files that differ from HEAD, staged or not (what makes a
  record's tree dirty)."""
  return _names(_git(repo_root, "diff", "HEAD", "--name-only",
                     "--no-relative", "-z"))


def untracked_code_files(repo_root: str) -> List[str]:
  """Untracked, not ignored files with a `CODE_SUFFIXES` suffix."""
  return [n for n in _names(_git(repo_root, "ls-files", "--others",
                                 "--exclude-standard", "-z"))
          if n.endswith(CODE_SUFFIXES)]


@dataclasses.dataclass(frozen=True)
class SourcePatch:
  """The uncommitted code of a checkout, as one patch on its HEAD."""
  text: bytes
  untracked: List[str]  # untracked files the patch adds
  omitted: List[str]  # changed or untracked files left out by the cap


def _tracked_diff(repo_root: str, cap_bytes: int):
  """(diff of tracked files against HEAD, changed files left out): the
  whole diff, or under the cap only the code files' diff, or nothing."""
  diff = _git(repo_root, *_DIFF, "HEAD")
  if len(diff) <= cap_bytes:
    return diff, []
  changed = changed_files(repo_root)
  code = _git(repo_root, *_DIFF, "HEAD", "--",
              *[f"*{s}" for s in CODE_SUFFIXES])
  if len(code) > cap_bytes:
    return b"", changed
  return code, [n for n in changed if not n.endswith(CODE_SUFFIXES)]


def source_patch(repo_root: str, cap_bytes: int = PATCH_CAP_BYTES
                 ) -> Optional[SourcePatch]:
  """The patch that turns `repo_root`'s HEAD into its working tree: the
  diff of tracked files and, as new files, the untracked code files
  (`untracked_code_files`), at most `cap_bytes` (files that would pass it
  are left out and named). None when there is nothing to record.

  Raises:
    OSError, subprocess.SubprocessError: no git, or not a git checkout.
  """
  text, omitted = _tracked_diff(repo_root, cap_bytes)
  untracked = []
  for name in untracked_code_files(repo_root):
    # `git diff --no-index` exits 1 when the files differ, as they do.
    piece = _git(repo_root, *_DIFF, "--no-index", "--", os.devnull, name,
                 ok=(0, 1))
    if len(text) + len(piece) > cap_bytes:
      omitted.append(name)
      continue
    text += piece
    untracked.append(name)
  if not text and not omitted:
    return None
  return SourcePatch(text, untracked, omitted)


# -- results from a dirty checkout ----------------------------------------------

def _has_tracked_files(folder: str) -> bool:
  """Whether git tracks files under `folder` (in the repository holding
  it, if any)."""
  parent = os.path.abspath(folder)
  while not os.path.isdir(parent):
    parent = os.path.dirname(parent)
  try:
    return bool(_git(parent, "ls-files", "-z", "--",
                     os.path.abspath(folder)).strip(b"\0"))
  except (OSError, subprocess.SubprocessError):
    return False


def _file_list(names: List[str]) -> str:
  shown = ", ".join(names[:_NAMED_FILES])
  more = len(names) - _NAMED_FILES
  return f"{shown}, and {more} more" if more > 0 else shown


def check_clean_for_results(out_dir: str, require_clean: bool,
                            repo_root: Optional[str] = None) -> None:
  """Before writing runs into `out_dir`: when git tracks results there and
  the checkout of the running code (`repo_root`) has uncommitted changes,
  logs one warning line naming them, or with `require_clean` refuses
  (UserError). Silent when git cannot tell."""
  repo_root = repo_root or code_root()
  if not _has_tracked_files(out_dir):
    return
  try:
    changed = changed_files(repo_root)
  except (OSError, subprocess.SubprocessError):
    return
  if not changed:
    return
  files = f"{len(changed)} changed: {_file_list(changed)}"
  if require_clean:
    raise UserError(f"--require_clean: {out_dir} holds committed results "
                    f"and the checkout {repo_root} has uncommitted changes "
                    f"({files}); commit them first")
  logging.warning("%s holds committed results and the checkout %s has "
                  "uncommitted changes (%s): the runs record a dirty tree "
                  "and a source.patch; commit first, or pass "
                  "--require_clean to refuse", out_dir, repo_root, files)
