"""Seed tables: mean ± std, counts, divergence and the FedSGD speed-up."""

from fedclf.results import tables

SPEED_UP = "speed-up vs FedSGD (× fewer rounds)"


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
  speed_up = {row[0]: row[header.index(SPEED_UP)]
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
  # Without a spec a group of seeds is named by the flags that differ
  # between rows (not dataset, the same in all).
  iid = by_label["algorithm=fedavg, partition=iid"]
  assert iid[1] == "2"
  assert iid[header.index("rounds to target")] == "25.0 ± 7.1"  # no target
  assert iid[header.index(SPEED_UP)] == ""
  diverged = by_label["avg_dir"]
  assert diverged[header.index("diverged at round")] == "3"
  assert diverged[header.index(SPEED_UP)] == ""


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


def da_run(method, seed, source, target, train_limit, layer=""):
  flags = {"method": method, "seed": seed, "source": source,
           "target": target, "train_limit": train_limit,
           "target_train_limit": 1800 if target == "usps" else 2000,
           "dann_feature_layer": layer, "model": "lenet5",
           "out_dir": f"/runs/{method}_{seed}"}
  name = f"{source}_{target}_{method}{'_' + layer if layer else ''}_s{seed}"
  return {"name": name, "dir": f"/runs/{name}",
          "config": {"config": {"flags": flags}},
          "summary": {"test_accuracy": 0.5 + 0.1 * seed,
                      "source_accuracy": 0.9}}


DA_RUNS = [da_run(m, s, src, tgt, limit, layer)
           for s in (0, 1)
           for m, src, tgt, limit, layer in (
               ("dann", "mnist", "mnist_m", 2000, ""),
               ("dann", "mnist", "mnist_m", 2000, "flatten"),
               ("source_only", "mnist", "mnist_m", 2000, ""),
               ("dann", "usps", "mnist", 1800, ""),
               ("dann", "mnist", "usps", 2000, ""))]


def test_without_a_spec_rows_are_named_by_the_flags_that_differ_only():
  labels = list(tables.group_by_setting(DA_RUNS))
  # Word-valued flags that differ are named; the training-set sizes follow
  # from source and target and the model is the same everywhere, so they
  # are not; an empty dann_feature_layer is left out.
  assert labels == [
      "method=dann, source=mnist, target=mnist_m",
      "dann_feature_layer=flatten, method=dann, source=mnist, "
      "target=mnist_m",
      "method=source_only, source=mnist, target=mnist_m",
      "method=dann, source=usps, target=mnist",
      "method=dann, source=mnist, target=usps"]
  header, rows = tables.seed_rows(DA_RUNS)
  assert [r[1] for r in rows] == ["2"] * 5
  assert rows[0][header.index("final accuracy (0–1)")] == "0.5500 ± 0.0707"
  # A run alone keeps its folder name.
  assert list(tables.group_by_setting(DA_RUNS[:1])) == [
      "mnist_mnist_m_dann_s0"]


def test_numbers_are_named_only_when_words_do_not_tell_rows_apart():
  runs = [fake_run(f"lr{lr}_s{s}", "fedavg", "iid", 10, seed=s)
          for lr in (0.1, 0.2) for s in (0, 1)]
  for run in runs:
    flags = run["config"]["config"]["flags"]
    flags["client_lr"] = float(run["name"][2:5])
    flags["rounds"] = 60  # the same everywhere: not named
  assert list(tables.group_by_setting(runs)) == ["client_lr=0.1",
                                                 "client_lr=0.2"]


def test_a_spec_names_its_rows_with_its_setting_names():
  setting_of = {r["name"]: r["name"].rsplit("_s", 1)[0] for r in DA_RUNS}
  groups = tables.group_by_setting(DA_RUNS, setting_of)
  # In name order, one row per setting, its seeds together.
  assert list(groups) == ["mnist_mnist_m_dann", "mnist_mnist_m_dann_flatten",
                          "mnist_mnist_m_source_only", "mnist_usps_dann",
                          "usps_mnist_dann"]
  assert all(len(members) == 2 for members in groups.values())
  text = tables.seed_table(DA_RUNS, "DA", setting_of)
  assert "| mnist_usps_dann | 2 | 0.5500 ± 0.0707 |" in text
  assert "method=" not in text.split("Commands")[0]


def test_headers_say_their_units():
  runs = [fake_run("sgd", "fedsgd", "iid", 600, target_accuracy=0.99),
          fake_run("avg", "fedavg", "iid", 20, target_accuracy=0.99)]
  header, _ = tables.seed_rows(runs)
  assert header == ["setting", "seeds", "final accuracy (0–1)",
                    "rounds to 0.99 accuracy", SPEED_UP]
  text = tables.seed_table(runs, "t")
  assert "fractions (0–1), not percentages" in text
  latex = tables.latex_table(runs, "t_1 & 50%")
  assert "final accuracy (0--1) & rounds to 0.99 accuracy" in latex
  assert "\\caption{t\\_1 \\& 50\\%. Mean $\\pm$" in latex
  assert "–" not in latex and "±" not in latex
  # Runs with different targets: the column cannot name one.
  runs[0]["summary"]["target_accuracy"] = 0.97
  assert tables.seed_rows(runs)[0][3] == "rounds to target"


def test_run_tables_say_their_units():
  central = {"name": "c", "dir": "/c", "config": {},
             "summary": {"test_accuracy": 0.9, "train_seconds": 12.0,
                         "examples_per_second": 500.0}}
  federated = fake_run("f", "fedavg", "iid", 5, rounds_run=5)
  text = tables.results_table([central, federated], "t")
  assert ("| run | dataset | model | test accuracy (0–1) | macro F1 (0–1) | "
          "epochs | train time (s) | examples/s |") in text
  assert "| rounds | test accuracy (0–1) |" in text
  assert "client accuracy p10 (0–1) | train time (s) |" in text


def test_load_runs_leaves_out_runs_moved_aside(tmp_path):
  for name in ("a", "a.old-20261205-101010", "b/c.old-20261205-101010-2"):
    (tmp_path / name).mkdir(parents=True)
    (tmp_path / name / "summary.json").write_text("{}")
    (tmp_path / name / "config.json").write_text("{}")
  assert [r["name"] for r in tables.load_runs(str(tmp_path))] == ["a"]


def test_codec_runs_get_uploaded_megabytes_and_ratio_to_uncompressed():
  dense = fake_run("fedavg", "fedavg", "iid", None,
                   total_upload_megabytes=200.0)
  topk = fake_run("topk", "fedavg", "iid", None, total_upload_megabytes=34.0)
  topk["config"]["config"]["flags"]["compression"] = "topk"
  header, rows = tables.seed_rows([dense, topk])
  by_label = {row[0]: row for row in rows}
  ratio = header.index("MB ratio to uncompressed")
  assert by_label["topk"][ratio] == "0.170"
  assert by_label["fedavg"][ratio] == "1.000"
  assert by_label["topk"][header.index("uploaded MB (10^6 bytes)")] == "34"
  # Tables without a codec keep their columns.
  header, _ = tables.seed_rows([dense])
  assert "MB ratio to uncompressed" not in header


def test_client_accuracy_spread_has_columns_when_runs_measured_it():
  runs = [fake_run("q_s0", "qfedavg", "iid", None, seed=0,
                   final_client_accuracy_p10=0.8,
                   final_client_accuracy_var=0.002),
          fake_run("q_s1", "qfedavg", "iid", None, seed=1,
                   final_client_accuracy_p10=0.6,
                   final_client_accuracy_var=0.004)]
  header, rows = tables.seed_rows(runs, {"q_s0": "q", "q_s1": "q"})
  assert rows[0][header.index("client accuracy p10 (0–1)")] == (
      "0.7000 ± 0.1414")
  # Variance in points² (percent accuracy): 0.002 -> 20, 0.004 -> 40.
  assert rows[0][header.index("client accuracy variance (points²)")] == (
      "30.0 ± 14.1")
  header, _ = tables.seed_rows([fake_run("a", "fedavg", "iid", 20)])
  assert "client accuracy variance (points²)" not in header


def test_a_federated_ssl_runs_knn_accuracy_is_in_the_knn_column_only():
  # Its summary's final_test_accuracy is the encoder's kNN accuracy.
  ssl = fake_run("ssl", "fedavg", "iid", None,
                 final_test_accuracy=0.82, final_knn_accuracy=0.82,
                 linear_probe_accuracy=0.87)
  header, rows = tables.seed_rows([ssl])
  assert "final accuracy (0–1)" not in header
  assert rows[0][header.index("kNN (0–1)")] == "0.8200"
  header, rows = tables.seed_rows(
      [ssl, fake_run("sup", "fedavg", "iid", None)],
      {"ssl": "ssl", "sup": "sup"})
  by_name = {row[0]: row for row in rows}
  column = header.index("final accuracy (0–1)")
  assert by_name["ssl"][column] == "" and by_name["sup"][column] == "0.9900"


def test_a_mean_over_fewer_seeds_than_the_row_has_says_how_many():
  # Seed 0 diverged (no final accuracy, a divergence round); seed 1 ended.
  runs = [fake_run("scaffold_s0", "scaffold", "labels_per_client", None,
                   seed=0, final_test_accuracy=None, diverged_at_round=13),
          fake_run("scaffold_s1", "scaffold", "labels_per_client", None,
                   seed=1, final_test_accuracy=0.8193)]
  header, (row,) = tables.seed_rows(runs)
  final = next(i for i, h in enumerate(header)
               if h.startswith("final accuracy"))
  assert row[1] == "2"
  assert row[final] == "0.8193 (1 of 2 seeds)"
  assert row[header.index("diverged at round")] == "13 (1 of 2 seeds)"
  # All seeds or none: no note.
  assert tables.seeds_covered([0.5, 0.6]) == ""
  assert tables.seeds_covered([None, None]) == ""
