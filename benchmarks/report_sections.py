"""The sections of results/benchmarks.md, for `federation_bench --update`
(which replaces only the items it measures), and item 1's settings, which
the peers benchmark shares. No flags here: tests import it next to other
benchmark modules that define their own (absl allows each flag once per
process)."""

import re

# Item 1's (clients, examples per client) and the round/fit throughput
# ratio each must reach.
EFFICIENCY_TARGETS = {(10, 600): 1.2, (100, 60): 1.0}


def earlier_header_note(header: str, items) -> str:
  """The header lines of the run that measured the sections without their
  own stamp, kept under an `--update` run's header: the earlier header's
  own such note if it has one (an earlier update), else its bullets."""
  lines = header.splitlines()
  kept = [line for line in lines if line.startswith("  - ")]
  if not kept:
    kept = ["  " + line for line in lines if line.startswith("- ")]
  return "\n".join(
      [f"- Sections without their own stamp (not item {', '.join(items)} "
       "of this run) come from an earlier run:"] + kept)


def read_sections(path: str):
  """(the text before the first item, {item: its section's text}) of an
  earlier report; ("", {}) if there is none."""
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return "", {}
  parts = re.split(r"(?m)^(?=## \d+\. )", text)
  sections = {re.match(r"## (\d+)\.", part).group(1): part
              for part in parts[1:]}
  return parts[0], sections
