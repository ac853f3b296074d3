"""What every checkpoint format of fedclf shares (the federated rounds'
`round_NNNNN.npz`, the epoch loops' TensorFlow checkpoints):

- the run's *setting* (the flags that change its result, see
  `run_folder.run_setting`) is stored, with its sha256, inside each
  checkpoint, so a checkpoint checks the run that resumes from it even
  when it was copied to another folder or is resumed by a library caller
  that never claimed a run folder;
- resuming tries the checkpoints newest first and skips, with a warning,
  one that cannot be read (truncated, garbled, a file missing): keeping
  the two newest is what makes a previous one there to fall back to.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence
from typing import Tuple, TypeVar

from absl import logging

from fedclf.errors import UnreadableCheckpointError
from fedclf.errors import UserError
from fedclf.results.run_folder import differing_flags
from fedclf.results.run_folder import setting_hash

T = TypeVar("T")


def setting_text(setting: Optional[Mapping[str, Any]]) -> str:
  """The record of `setting` stored in a checkpoint ("" without one)."""
  if setting is None:
    return ""
  return json.dumps({"setting": dict(setting),
                     "sha256": setting_hash(setting)}, sort_keys=True)


def parse_setting_text(path: str, text: str) -> Optional[Dict[str, Any]]:
  """The setting stored as `text` in the checkpoint at `path` (None: it was
  written without one). A record that does not match its own hash is a
  damaged checkpoint: UnreadableCheckpointError."""
  if not text:
    return None
  try:
    record = json.loads(text)
    setting = dict(record["setting"])
    intact = record["sha256"] == setting_hash(setting)
  except (ValueError, KeyError, TypeError):
    intact = False
  if not intact:
    raise UnreadableCheckpointError(
        f"checkpoint {path}: its stored setting is damaged")
  return setting


def check_setting(path: str, stored: Optional[Mapping[str, Any]],
                  setting: Optional[Mapping[str, Any]]) -> None:
  """Refuses (UserError naming the flags) to resume from the checkpoint at
  `path`, written with setting `stored`, a run of another `setting`.

  Either being None (a checkpoint from before settings were stored, a
  library caller without one) leaves nothing to compare. Flags only one
  side has come from another fedclf version and are not compared, as
  when --resume compares a run folder's setting.json.
  """
  if stored is None or setting is None:
    return
  differ = differing_flags(stored, setting)
  if differ:
    raise UserError(
        f"checkpoint {path} was written by a run with another setting: "
        f"{', '.join(differ)}; resume with that run's flags, or start "
        f"afresh in another folder (or with --overwrite)")


def resume_newest_readable(paths: Sequence[str],
                           restore: Callable[[str], T]
                           ) -> Optional[Tuple[str, T]]:
  """(path, restore(path)) for the newest checkpoint of `paths` (newest
  first) that `restore` can read; None when there are none.

  A checkpoint that `restore` reports unreadable (UnreadableCheckpointError)
  is skipped for the previous one with a warning; it stays where it is (the
  next saves replace or prune it). Any other error of `restore` (another
  setup or setting) propagates: an older checkpoint would not be right
  either. When none can be read: a one-line UserError.
  """
  problems: List[str] = []
  for path in paths:
    try:
      restored = restore(path)
    except UnreadableCheckpointError as e:
      logging.warning("cannot read checkpoint %s (%s); trying the previous "
                      "one", path, " ".join(str(e).split()))
      problems.append(f"{os.path.basename(path)}: {' '.join(str(e).split())}")
      continue
    if problems:
      logging.warning("resuming from the older checkpoint %s; %d newer could "
                      "not be read", path, len(problems))
    return path, restored
  if not paths:
    return None
  where = os.path.dirname(paths[0]) or "."
  raise UserError(
      f"no checkpoint in {where} can be read ({'; '.join(problems)}); "
      f"move the folder aside to start afresh")
