"""Seed tables of domain-adaptation runs show both domains' accuracy."""

from fedclf.results import tables


def _run(method, seed, target, source):
  return {"name": f"{method}_s{seed}", "dir": f"/runs/{method}_s{seed}",
          "summary": {"method": method, "test_accuracy": target,
                      "target_accuracy": target, "source_accuracy": source},
          "config": {"config": {"flags": {"method": method, "seed": seed}}}}


def test_seed_rows_report_target_and_source_accuracy():
  header, rows = tables.seed_rows([
      _run("dann", 0, 0.7, 0.95), _run("dann", 1, 0.8, 0.97),
      _run("source_only", 0, 0.6, 0.99), _run("source_only", 1, 0.6, 0.99)])
  assert header == ["setting", "seeds", "final accuracy (0–1)",
                    "source-domain accuracy (0–1)"]
  assert rows == [["method=dann", "2", "0.7500 ± 0.0707", "0.9600 ± 0.0141"],
                  ["method=source_only", "2", "0.6000 ± 0.0000",
                   "0.9900 ± 0.0000"]]


def test_runs_without_source_accuracy_get_no_column():
  run = _run("dann", 0, 0.7, 0.95)
  del run["summary"]["source_accuracy"]
  header, _ = tables.seed_rows([run])
  assert "source-domain accuracy (0–1)" not in header
