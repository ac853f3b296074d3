r"""Federation benchmarks: writes results/benchmarks.md (not part of tests).

  python -m benchmarks.federation_bench [--quick] [--items=1,2,3,4,5,6]
  make bench

The six figures of issue #9, each with its target and pass/fail:
  1. federation efficiency: examples/s of one FedAvg round (every client
     sampled, B=10, E=1) over those of Keras `model.fit` on the same
     examples in the same process; McMahan CNN on MNIST, 10 x 600 and
     100 x 60 clients, local and tff backends; peak memory;
  2. speed-up of fedclf over a plain tff.learning `build_weighted_fed_avg`
     loop at 10, 100 and 500 clients per round;
  3. resident memory (process + children) after round 10 and round 200,
     small model, 50 clients per round, both backends;
  4. scale: 10,000 Dirichlet clients, 100 per round: s/round, peak memory
     (against 1,000 clients, to show memory follows the clients per round);
  5. scale-out: the same rounds on two TFF workers on localhost;
  6. a per-round time breakdown;
  7. batched clients (issue #25): a FedAvg round with the clients batched
     (--client_batching=on) and in replicas (off) against one model's SGD
     at batch 256 on the same examples in one graph; MLP, McMahan CNN and LeNet-5 at B=10
     and B=50, 10 x 600 and 100 x 60 clients (`--items=7` runs only it,
     `--quick` only B=10 at 10 x 600);
  8. peers (issue #23, `make bench-peers`): the item-1 workload (McMahan
     CNN FedAvg, 10 x 600 and 100 x 60 clients, B=10, E=1) on fedclf's
     local and tff backends and written as Flower's quickstart writes it
     (flwr.simulation on Ray, in `.venv-peers`), each side a separate
     process, alternating: s/round and peak memory of each process tree;
  9. pinned scaling (issue #23): the tff backend over one TFF worker
     pinned to core 0 against two pinned to cores 0 and 1 (`taskset`), 20
     and 100 clients x 60 examples per round, McMahan CNN; also writes
     results/scaling.md (--scaling_out), the projection to 4-64 workers.
Each measurement runs in a fresh interpreter (benchmarks/measure.py), and
the two sides of every ratio are timed alternately in that one process.
"""

import json
import os
import platform
import sys
from typing import Dict, List

from absl import flags

from benchmarks import report_sections
from fedclf import cli

cli.define_common_flags()
flags.DEFINE_bool("quick", False,
                  "Small settings (a smoke run of every item, minutes).")
flags.DEFINE_list("items", ["1", "2", "3", "4", "5", "6", "7"],
                  "Which figures to measure (not by default: 8, the peers, "
                  "needs `make bench-peers`'s environment; 9, pinned "
                  "scaling, is `make bench-scaling`).")
flags.DEFINE_string("out", "results/benchmarks.md", "Markdown output.")
flags.DEFINE_bool("update", False,
                  "Replace only the measured items' sections of --out and "
                  "keep the others (every section names the commit and "
                  "time it was measured at).")
flags.DEFINE_string("peers_venv", ".venv-peers",
                    "Item 8: Flower's environment (`make bench-peers` "
                    "builds it), relative to the repository root.")
flags.DEFINE_integer("peer_runs", 2,
                     "Item 8: processes per side and setting (alternating).")
flags.DEFINE_integer("scaling_runs", 2,
                     "Item 9: simulations per configuration (ABBA order).")
flags.DEFINE_string("scaling_out", "results/scaling.md",
                    "Item 9: the scaling model and projection (markdown; "
                    "the measured rounds go to the same name with .json).")
flags.DEFINE_integer("repeats", 5,
                     "Timed repeats per measurement (after a warm-up).")

FLAGS = flags.FLAGS

MIB_TARGET_100_CLIENTS = 1.5 * 1024
SPEEDUP_TARGET = 1.5
MEMORY_GROWTH_TARGET = 0.05
SCALE_MEMORY_TOLERANCE = 0.10


def verdict(ok: bool) -> str:
  return "**pass**" if ok else "**FAIL**"


def machine_description() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if
               l.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  try:
    import psutil  # pylint: disable=g-import-not-at-top
    memory = f", {psutil.virtual_memory().total / 2**30:.0f} GiB memory"
  except ImportError:
    memory = ""
  return f"{cpu}, {os.cpu_count()} cores{memory}"


class Report:
  """Collects the markdown and the load average around each item."""

  def __init__(self):
    self.lines: List[str] = []

  def add(self, *lines: str) -> None:
    self.lines.extend(lines)
    print("\n".join(lines), flush=True)

  def load_note(self, before, after) -> None:
    if before and after:
      self.add(f"_Load average (1 min) before / after: {before[0]:.1f} / "
               f"{after[0]:.1f} on {os.cpu_count()} cores._", "")


def item_efficiency(report: Report, quick: bool, repeats: int) -> None:
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  settings = ([(10, 60), (20, 12)] if quick else
              list(report_sections.EFFICIENCY_TARGETS))
  report.add("## 1. Federation efficiency (FedAvg round vs Keras fit)", "",
             "McMahan CNN on MNIST, every client sampled, B=10, E=1, the "
             "same examples for both; efficiency = round examples/s over "
             "Keras `fit` examples/s in the same process (fastest repeat of "
             "each; median of per-repeat ratios in brackets). Memory: peak "
             "resident memory of the process and its children (TFF worker) "
             "during the timed rounds.", "",
             "| clients x examples | backend | round examples/s | Keras fit "
             "examples/s | efficiency | target | peak memory | memory "
             "target |", "|---|---|---|---|---|---|---|---|")
  before = measure.load_average()
  best: Dict = {}
  for clients, per_client in settings:
    for backend in ("local", "tff"):
      r = measure.in_fresh_process(measure.measure_efficiency, backend,
                                   clients, per_client, "cnn", repeats)
      target = report_sections.EFFICIENCY_TARGETS.get((clients, per_client))
      best[(clients, backend)] = r
      memory_target = ""
      if clients == 100:
        memory_target = (f"<= {MIB_TARGET_100_CLIENTS:.0f} MiB "
                         f"{verdict(r['peak_rss_mib'] <= MIB_TARGET_100_CLIENTS)}")
      report.add(
          f"| {clients} x {per_client} | {backend} | "
          f"{max(r['round_rates']):.0f} | {max(r['fit_rates']):.0f} | "
          f"{r['efficiency']:.2f} ({r['median_efficiency']:.2f}) | "
          + (f">= {target} {verdict(r['efficiency'] >= target)}"
             if target else "-") +
          f" | {r['peak_rss_mib']:.0f} MiB | {memory_target or '-'} |")
  report.add("", "Targets apply to fedclf's best backend (`local`).", "")
  report.load_note(before, measure.load_average())


def item_plain_tff(report: Report, quick: bool, repeats: int) -> None:
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  settings = [(10, 12), (20, 12)] if quick else [(10, 600), (100, 60),
                                                 (500, 60)]
  report.add("## 2. Against a plain tff.learning loop", "",
             "The same rounds (every client trains its examples once, B=10, "
             "McMahan CNN) with `tff.learning.algorithms."
             "build_weighted_fed_avg` over one `tf.data` dataset per client "
             "(Keras model via `from_keras_model`, SGD clients and server), "
             "on TFF's C++ worker; fedclf's `local` backend timed "
             "alternately with it in the same process.", "",
             "| clients per round | plain TFF examples/s | fedclf local "
             "examples/s | speed-up | target |", "|---|---|---|---|---|")
  before = measure.load_average()
  for clients, per_client in settings:
    r = measure.in_fresh_process(measure.measure_against_plain_tff, clients,
                                 per_client, "cnn", repeats)
    target = "-"
    if clients >= 100 and not quick:
      target = (f">= {SPEEDUP_TARGET}x "
                f"{verdict(r['speedup'] >= SPEEDUP_TARGET)}")
    report.add(f"| {clients} ({per_client} examples each) | "
               f"{max(r['plain_tff_rates']):.0f} | "
               f"{max(r['local_rates']):.0f} | {r['speedup']:.2f}x "
               f"({r['median_speedup']:.2f}x) | {target} |")
  report.add("")
  report.load_note(before, measure.load_average())


def item_memory(report: Report, quick: bool, repeats: int) -> None:
  del repeats  # One long run.
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  late = 40 if quick else 200
  report.add("## 3. Memory over rounds", "",
             f"MLP (2NN), 500 clients x 60 MNIST examples, 50 per round, "
             f"{late} rounds of training plus an evaluation every 10 rounds; "
             f"resident memory of the process and its children (the TFF "
             f"worker; in brackets: process + worker).", "",
             "| backend | after round 10 | after round "
             f"{late} | growth | target | s/round |", "|---|---|---|---|---|---|")
  before = measure.load_average()
  for backend in ("local", "tff"):
    r = measure.in_fresh_process(measure.measure_memory_over_rounds, backend,
                                 late, 500, 50, 60, "mlp", 10)
    parts = {int(k): v for k, v in r["rss_parts_mib_by_round"].items()}
    total = {k: sum(v) for k, v in parts.items()}
    growth = total[late] / total[10] - 1

    def cell(mib, split):
      return (f"{mib:.0f} MiB" if not split[1] else
              f"{mib:.0f} MiB ({split[0]:.0f} + {split[1]:.0f})")

    report.add(f"| {backend} | {cell(total[10], parts[10])} | "
               f"{cell(total[late], parts[late])} | {100 * growth:+.1f}% | "
               f"< {100 * MEMORY_GROWTH_TARGET:.0f}% "
               f"{verdict(growth < MEMORY_GROWTH_TARGET)} | "
               f"{r['seconds_per_round']:.2f} |")
    trend = ", ".join(f"{k}: {p[0]:.0f}+{p[1]:.0f}"
                      for k, p in sorted(parts.items()))
    report.add(f"<!-- {backend} MiB (process+children) by round: {trend} -->")
  report.add("")
  report.load_note(before, measure.load_average())


def item_scale(report: Report, quick: bool, repeats: int) -> None:
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  big, small = (2000, 200) if quick else (10000, 1000)
  report.add(f"## 4. Scale: {big:,} clients, 100 per round", "",
             "Dirichlet(0.5) label skew over all 60,000 MNIST training "
             "images, MLP, local backend; the same with "
             f"{small:,} clients shows what the client count itself costs.",
             "Setup: loading the data, partitioning, writing the partition "
             "report and building the backend (after imports).",
             "", "| clients | client sizes (min / median / max) | setup s | "
             "s per round | peak memory |", "|---|---|---|---|---|")
  before = measure.load_average()
  runs = {}
  for n in (small, big):
    r = measure.in_fresh_process(measure.measure_scale, n, 100, repeats,
                                 "mlp")
    runs[n] = r
    lo, mid, hi = r["client_sizes"]
    report.add(f"| {n:,} | {lo} / {mid:.0f} / {hi} | "
               f"{r['setup_seconds']:.1f} | {r['seconds_per_round']:.2f} | "
               f"{r['peak_rss_mib']:.0f} MiB |")
  ratio = runs[big]["peak_rss_mib"] / runs[small]["peak_rss_mib"] - 1
  report.add("", f"Peak memory with {big:,} clients is {100 * ratio:+.1f}% "
             f"of that with {small:,} (target: within "
             f"{100 * SCALE_MEMORY_TOLERANCE:.0f}%, i.e. memory follows the "
             f"clients per round, not all clients): "
             f"{verdict(ratio <= SCALE_MEMORY_TOLERANCE)}. Idle clients "
             f"cost one index array each (the partition); a sampled client "
             f"is a [steps x B] index matrix into data held once.", "")
  report.load_note(before, measure.load_average())


def item_scale_out(report: Report, quick: bool, repeats: int) -> None:
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  clients, per_client = (10, 12) if quick else (10, 600)
  before = measure.load_average()
  r = measure.in_fresh_process(measure.measure_scale_out, clients,
                               per_client, "cnn", repeats)
  report.add("## 5. Scale-out over TFF workers", "",
             f"McMahan CNN, {clients} clients x {per_client} examples per "
             f"round; the two workers were started with `python -m "
             f"simulations.tff_worker --port=N` on this machine (all on the "
             f"same {os.cpu_count()} cores, so no speed-up is expected: this "
             f"shows the path works and what it costs).", "")
  report.add(*[f"- {k}: {v:.2f} s per round (fastest of {repeats})"
               for k, v in r["seconds_per_round"].items()])
  report.add("")
  report.load_note(before, measure.load_average())


def item_breakdown(report: Report, quick: bool, repeats: int) -> None:
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  clients, per_round, per_client = (20, 4, 60) if quick else (100, 10, 600)
  before = measure.load_average()
  r = measure.in_fresh_process(measure.measure_breakdown, clients, per_round,
                               per_client, "cnn", repeats)
  report.add("## 6. Where a round's time goes (local backend)", "",
             f"McMahan's setting: McMahan CNN, {clients} clients x "
             f"{per_client} MNIST examples, {per_round} per round, B=10, "
             f"E=1; median of {repeats} rounds.", "",
             "| part | seconds per round |", "|---|---|")
  report.add(*[f"| {k} | {v:.3f} |" for k, v in r["parts"].items()])
  report.add("", f"The first round also traces the client graph: "
             f"{r['first_round_seconds']:.1f} s in all.", "")
  report.load_note(before, measure.load_average())


def item_client_batching(report: Report, quick: bool, repeats: int) -> None:
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  settings = ([(10, 600, 10)] if quick else
              [(c, n, b) for b in (10, 50) for c, n in ((10, 600), (100, 60))])
  report.add("## 7. Batched clients against one model at batch 256", "",
             "FedAvg round, every client sampled, E=1, local backend with "
             "the clients batched (`--client_batching=on`) and in model "
             "replicas (`off`), against one model's SGD epoch at batch 256 "
             "on the same MNIST examples as one compiled graph, all timed "
             "alternately in one process; ratio = "
             "round examples/s over batch-256 examples/s (fastest repeat of "
             "each; median of per-repeat ratios in brackets).", "",
             "| model | clients x examples | B | batched examples/s | "
             "replicas examples/s | batch-256 examples/s | batched ratio | "
             "replicas ratio | target |", "|---|---|---|---|---|---|---|---|---|")
  before = measure.load_average()
  for model in ("mlp", "cnn", "lenet5"):
    for clients, per_client, batch in settings:
      r = measure.in_fresh_process(measure.measure_client_batching, model,
                                   clients, per_client, batch, repeats)
      (on, on_median), (off, off_median) = (r["ratios"]["on"],
                                            r["ratios"]["off"])
      target = ("-" if batch != 10 or model == "lenet5" else
                f">= 0.9 {verdict(on >= 0.9)}")
      report.add(f"| {model} | {clients} x {per_client} | {batch} | "
                 f"{max(r['rates']['on']):.0f} | {max(r['rates']['off']):.0f}"
                 f" | {max(r['rates']['fit']):.0f} | {on:.2f} "
                 f"({on_median:.2f}) | {off:.2f} ({off_median:.2f}) | "
                 f"{target} |")
  report.add("")
  report.load_note(before, measure.load_average())


def item_peers(report: Report, quick: bool, repeats: int) -> None:
  # pylint: disable=g-import-not-at-top
  from benchmarks import measure
  from benchmarks.peers import compare
  from benchmarks.peers import workload
  # pylint: enable=g-import-not-at-top
  python = compare.peers_python(FLAGS.peers_venv)
  runs = 1 if quick else FLAGS.peer_runs
  report.add("## 8. Against Flower (peers)", "",
             f"The workload of item 1 (McMahan CNN FedAvg on MNIST, every "
             f"client sampled, B={workload.BATCH_SIZE}, "
             f"E={workload.LOCAL_EPOCHS}, lr {workload.CLIENT_LR}, the same "
             f"examples per client) on fedclf's local and tff backends and "
             f"written as Flower's quickstart-tensorflow writes it (Keras "
             f"model, `NumPyClient` with `model.fit`, `FedAvg`, "
             f"`flwr.simulation.run_simulation` on Ray with its default "
             f"resources; `benchmarks/peers/flower_fedavg.py` in "
             f"`{compare.PEERS_VENV}`). Each side is its own process, "
             f"{runs} per side in rotating order, each a warm-up round and "
             f"{repeats} timed ones; s/round: fastest (median) timed round; "
             f"throughput vs Flower: Flower's fastest s/round over the "
             f"side's. Memory: peak of the summed resident memory of the "
             f"side's process tree (Ray's raylet, GCS and actors; the TFF "
             f"worker), largest over its runs.", "",
             "| clients x examples | side | s/round | examples/s | "
             "throughput vs Flower | target | peak memory | memory vs "
             "Flower | target |", "|---|---|---|---|---|---|---|---|---|")
  before = measure.load_average()
  settings = workload.QUICK_SETTINGS if quick else workload.SETTINGS
  for clients, per_client in settings:
    results = compare.summary(compare.measure_setting(
        clients, per_client, runs, repeats,
        os.environ.get("FEDCLF_DATA_DIR", ""), python))
    for side, r in results.items():
      local = side == "fedclf local"
      report.add(
          f"| {clients} x {per_client} | {side} | {r['best_s']:.2f} "
          f"({r['median_s']:.2f}) | {clients * per_client / r['best_s']:.0f}"
          f" | {r['throughput_vs_flower']:.2f}x | " +
          (f">= {compare.THROUGHPUT_TARGET}x "
           f"{verdict(r['throughput_vs_flower'] >= compare.THROUGHPUT_TARGET)}"
           if local else "-") +
          f" | {r['peak_mib']:.0f} MiB | {r['memory_vs_flower']:.2f} | " +
          (f"<= {compare.MEMORY_TARGET} "
           f"{verdict(r['memory_vs_flower'] <= compare.MEMORY_TARGET)}"
           if local else "-") + " |")
  report.add("", "Targets apply to fedclf's local backend.", "")
  report.load_note(before, measure.load_average())


def wire_cells(measurement: Dict) -> str:
  """Item 9's byte columns for one setting: wire, expected, verdict and
  the clients' own accounting."""
  from benchmarks import scaling  # pylint: disable=g-import-not-at-top
  points = [p for p in scaling.measured_points([measurement])]
  wire = [scaling.round_bytes(p) for p in points]
  if None in wire:
    return "not reported by this build | - | - | -"
  expected = [scaling.expected_round_bytes(p) for p in points]
  ok = all(abs(w - e) <= scaling.BYTES_TOLERANCE * e
           for w, e in zip(wire, expected))
  clients = points[0]["upload_bytes"] + points[0]["download_bytes"]
  return (" / ".join(f"{w / 2**20:.1f} MiB" for w in wire) + " | " +
          " / ".join(f"{e / 2**20:.1f} MiB" for e in expected) +
          f" | within {scaling.BYTES_TOLERANCE:.0%} {verdict(ok)} | "
          f"{clients / 2**20:.0f} MiB")


def item_pinned_scaling(report: Report, quick: bool, repeats: int) -> None:
  # pylint: disable=g-import-not-at-top
  from benchmarks import measure
  from benchmarks import scaling
  from fedclf.results.record import atomic_write_text
  # pylint: enable=g-import-not-at-top
  settings = [(4, 12)] if quick else [(20, 60), (100, 60)]
  runs = 1 if quick else FLAGS.scaling_runs
  report.add("## 9. Pinned scaling over TFF workers", "",
             "McMahan CNN FedAvg (B=10, E=1, every client sampled) on the tff "
             "backend over workers started with `taskset -c <core> python -m "
             "simulations.tff_worker --port=N`: one on core 0 against two on "
             "cores 0 and 1, the same clients per round; the driver is "
             "pinned to its workers' cores (1 core against 2 in all). "
             f"{runs} simulation(s) per configuration in ABBA order, each a "
             f"warm-up round and {repeats} timed ones; ratio = round "
             "throughput of two workers over one (fastest rounds; medians in "
             "brackets). Wire: the rounds' gRPC bytes both ways "
             "(`bytes/sent_to_workers` + `bytes/received_from_workers`) "
             "against what FedAvg must send when no examples cross it: per "
             "worker the weights down and one sum of its clients' updates "
             "up, plus the computation and the clients' index matrices "
             f"(target: within {scaling.BYTES_TOLERANCE:.0%}). fedclf's "
             "per-client accounting (`download_bytes` + `upload_bytes`, "
             "what the clients would send were each on its own machine) is "
             "2 x model x clients. Projection: results/scaling.md.", "",
             "| clients x examples | 1 worker s/round | 2 workers s/round | "
             "ratio | target | wire per round (1 / 2 workers) | expected "
             "(1 / 2 workers) | wire target | clients' accounting |",
             "|---|---|---|---|---|---|---|---|---|")
  before = measure.load_average()
  measurements = []
  for clients, per_client in settings:
    m = measure.in_fresh_process(scaling.measure_pinned_scaling, clients,
                                 per_client, "cnn", repeats, runs)
    measurements.append(m)
    one, two = (scaling.summarize(m["rounds"][k]) for k in scaling.CONFIGS)
    ratio = one["best_s"] / two["best_s"]
    report.add(
        f"| {clients} x {per_client} | {one['best_s']:.2f} "
        f"({one['median_s']:.2f}) | {two['best_s']:.2f} "
        f"({two['median_s']:.2f}) | {ratio:.2f}x "
        f"({one['median_s'] / two['median_s']:.2f}x) | >= "
        f"{scaling.RATIO_TARGET}x {verdict(ratio >= scaling.RATIO_TARGET)} | "
        + wire_cells(m) + " |")
  report.add("")
  report.load_note(before, measure.load_average())
  atomic_write_text(FLAGS.scaling_out, scaling.scaling_markdown(
      measurements, "\n".join(report.lines[2:6])) + "\n")
  # Every round's figures, from which the markdown can be written again.
  atomic_write_text(os.path.splitext(FLAGS.scaling_out)[0] + ".json",
                    json.dumps(measurements, indent=1) + "\n")


ITEMS = ("1", "2", "3", "4", "5", "6", "7", "8", "9")


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.items) - set(ITEMS))
  if unknown:
    cli.exit_with_user_error(f"unknown item(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(ITEMS)}")
  for name in ("repeats", "peer_runs", "scaling_runs"):
    if FLAGS[name].value < 1:
      cli.exit_with_user_error(f"{name} must be >= 1, got "
                               f"{FLAGS[name].value}")
  if "8" in FLAGS.items:
    from benchmarks.peers import compare  # pylint: disable=g-import-not-at-top
    compare.peers_python(FLAGS.peers_venv)  # refuses before any measuring
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fedclf.results.record import atomic_write_text  # pylint: disable=g-import-not-at-top
  from fedclf.results.record import environment_info  # pylint: disable=g-import-not-at-top
  env = environment_info()
  versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
  git = env.get("git", {})
  command = "python -m benchmarks.federation_bench " + " ".join(
      a for a in sys.argv[1:])
  report = Report()
  report.add("# fedclf benchmarks", "",
             f"- Machine: {machine_description()}, GPUs visible to "
             f"TensorFlow: {len(tf.config.list_physical_devices('GPU'))}; "
             f"shared with other jobs, so only ratios measured back to back "
             f"are meaningful, and the load average is noted per item.",
             f"- Versions: {versions}.",
             f"- Commit: {git.get('commit')}"
             f"{' (with uncommitted changes)' if git.get('dirty') else ''}; "
             f"started {env['started_utc']}.",
             f"- Command: `{command.strip()}` (`make bench`)"
             f"{'; quick settings' if FLAGS.quick else ''}.", "")
  items = {"1": item_efficiency, "2": item_plain_tff, "3": item_memory,
           "4": item_scale, "5": item_scale_out, "6": item_breakdown,
           "7": item_client_batching, "8": item_peers,
           "9": item_pinned_scaling}
  kept = (report_sections.read_sections(FLAGS.out) if FLAGS.update else
          ("", {}))
  stamp = (f"_Measured at commit {str(git.get('commit'))[:10]}"
           f"{' (dirty)' if git.get('dirty') else ''} on {machine_description()}"
           f", {env['started_utc'][:16]} UTC._")
  sections = dict(kept[1])
  for key in sorted(FLAGS.items):
    start = len(report.lines)
    items[key](report, FLAGS.quick, FLAGS.repeats)
    # The stamp after the heading and its blank line.
    sections[key] = "\n".join(report.lines[start:start + 2] + [stamp, ""] +
                              report.lines[start + 2:])
    # Written after every item, so a long run keeps what it measured.
    header = "\n".join(report.lines[:6])
    if kept[0]:
      header += "\n" + report_sections.earlier_header_note(kept[0],
                                                            FLAGS.items)
    atomic_write_text(FLAGS.out, header.rstrip("\n") + "\n\n" + "\n".join(
        sections[k].rstrip("\n") + "\n" for k in sorted(sections)))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
