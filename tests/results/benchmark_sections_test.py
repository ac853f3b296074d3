"""`federation_bench --update`: one item's section replaced, the others and
the earlier run's header kept."""

from benchmarks import report_sections

EARLIER = """# fedclf benchmarks

- Machine: old box
- Commit: abc

## 1. One

old one

## 7. Seven

old seven
"""


def test_read_sections_splits_by_item(tmp_path):
  path = tmp_path / "b.md"
  path.write_text(EARLIER)
  header, sections = report_sections.read_sections(str(path))
  assert header.startswith("# fedclf benchmarks")
  assert sorted(sections) == ["1", "7"]
  assert sections["7"] == "## 7. Seven\n\nold seven\n"
  assert report_sections.read_sections(str(tmp_path / "none.md")) == ("", {})


def test_earlier_header_kept_once_over_repeated_updates():
  header, _ = EARLIER.split("## 1.")
  note = report_sections.earlier_header_note(header, ["7"])
  assert note.splitlines()[1:] == ["  - Machine: old box", "  - Commit: abc"]
  # A second update keeps the first run's bullets, not the update's own.
  second = "# h\n\n- Machine: new box\n" + note + "\n"
  again = report_sections.earlier_header_note(second, ["6"])
  assert again.splitlines()[1:] == note.splitlines()[1:]
