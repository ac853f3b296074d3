"""Seed tables: mean ± std, counts, divergence and the FedSGD speed-up."""

from fedclf.results import tables


def fake_run(name, algorithm, partition, rounds_to_target, seed=0,
             **summary):
  flags = {"algorithm": algorithm, "partition": partition, "seed": seed,
           "dataset": "mnist", "out_dir": f"/runs/{name}"}
  return {"name": name, "dir": f"/runs/{name}",
          "config": {"config": {"flags": flags}},
          "summary": {"algorithm": algorithm, "final_test_accuracy": 0.99,
                      "rounds_to_target": rounds_to_target, **summary}}


def test_speed_up_is_against_fedsgd_on_the_same_split():
  runs = [fake_run("sgd_iid", "fedsgd", "iid", 600),
          fake_run("sgd_shards", "fedsgd", "shards", 400),
          fake_run("avg_iid", "fedavg", "iid", 20),
          fake_run("avg_shards", "fedavg", "shards", 100)]
  header, rows = tables.seed_rows(runs)
  speed_up = {row[0]: row[header.index("speed-up vs FedSGD")]
              for row in rows}
  assert speed_up == {"sgd_iid": "1.0×", "sgd_shards": "1.0×",
                      "avg_iid": "30.0×", "avg_shards": "4.0×"}
  # Rounds are counts: whole numbers, even when small.
  assert rows[2][header.index("rounds to target")] == "20"


def test_seeds_average_and_a_split_without_fedsgd_has_no_speed_up():
  runs = [fake_run("avg_iid_s0", "fedavg", "iid", 20, seed=0),
          fake_run("avg_iid_s1", "fedavg", "iid", 30, seed=1),
          fake_run("sgd_shards", "fedsgd", "shards", 400),
          fake_run("avg_dir", "fedavg", "dirichlet", None,
                   diverged_at_round=3)]
  header, rows = tables.seed_rows(runs)
  by_label = {row[0]: row for row in rows}
  iid = by_label["algorithm=fedavg, partition=iid"]
  assert iid[1] == "2"
  assert iid[header.index("rounds to target")] == "25.0 ± 7.1"
  assert iid[header.index("speed-up vs FedSGD")] == ""
  diverged = by_label["avg_dir"]
  assert diverged[header.index("diverged at round")] == "3"
  assert diverged[header.index("speed-up vs FedSGD")] == ""


def test_a_spec_groups_seeds_whose_recorded_flags_differ():
  # Seed 0 was recorded before `input_scaling` existed; the spec still
  # declares the three runs one setting, so they share a row.
  old = fake_run("avg", "fedavg", "shards", 90)
  new = [fake_run(f"avg_seed{s}", "fedavg", "shards", r, seed=s)
         for s, r in ((1, 99), (2, 110))]
  for run in new:
    run["config"]["config"]["flags"]["input_scaling"] = "standardize"
  unit = fake_run("avg_unit", "fedavg", "shards", 115)
  unit["config"]["config"]["flags"]["input_scaling"] = "unit"
  runs = [old] + new + [unit]
  by_recorded_flags = tables.seed_rows(runs)[1]
  assert len(by_recorded_flags) == 3  # seed 0 stands apart
  setting_of = {"avg": "avg", "avg_seed1": "avg", "avg_seed2": "avg",
                "avg_unit": "avg_unit"}
  header, rows = tables.seed_rows(runs, setting_of)
  by_label = {row[0]: row for row in rows}
  assert set(by_label) == {"avg", "avg_unit"}
  assert by_label["avg"][1] == "3"
  assert by_label["avg"][header.index("rounds to target")] == "99.7 ± 10.0"
