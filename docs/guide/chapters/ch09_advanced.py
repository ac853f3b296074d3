"""Chapter 9: federated learning, self-supervised pretraining, domain
adaptation and personalization: small runs of the guide's own, and the
project's full result tables from results/."""

from __future__ import annotations

import os
import re
from typing import List, Tuple

from docs.guide import core
from docs.guide.core import Command

# 20 clients on the embedded digits: seconds per round, and skew shows.
FEDERATED = ("--dataset=digits", "--model=cnn", "--num_clients=20",
             "--clients_per_round=5", "--rounds=20", "--local_epochs=2",
             "--local_batch_size=10", "--client_lr=0.05", "--eval_every=2",
             "--per_client_eval=20")
SKEW = ("--partition=dirichlet", "--dirichlet_alpha=0.1")
FEDERATED_RUNS = {
    "fedavg_iid": ("--algorithm=fedavg", "--partition=iid",
                   "--centralized_epochs=10"),
    "fedavg_dirichlet0.1": ("--algorithm=fedavg", *SKEW),
    "fedprox_dirichlet0.1": ("--algorithm=fedprox", "--prox_mu=0.1", *SKEW),
    "scaffold_dirichlet0.1": ("--algorithm=scaffold", *SKEW),
    "fedavgm_dirichlet0.1": ("--algorithm=fedavgm", "--server_lr=1.0",
                             "--server_momentum=0.9", *SKEW),
    "fedadam_dirichlet0.1": ("--algorithm=fedadam", "--server_lr=0.03",
                             *SKEW),
    "fednova_dirichlet0.1": ("--algorithm=fednova", *SKEW),
}
# Personalization: the same skewed clients, each holding out 20% of its
# images as its own test set (--client_test_fraction).
PERSONAL = (*SKEW, "--client_test_fraction=0.2")
PERSONAL_RUNS = {
    "fedavg": ("--algorithm=fedavg",),
    "fedavg_finetune": ("--algorithm=fedavg", "--finetune_steps=5"),
    "fedper": ("--algorithm=fedper",),
    "ditto": ("--algorithm=ditto",),
    "reptile": ("--algorithm=reptile", "--personalization_steps=5"),
}
SSL = ("--dataset=mnist", "--train_limit=2000", "--test_limit=1000",
       "--model=cnn", "--method=simclr", "--epochs=5", "--batch_size=256",
       "--label_fractions=0.05", "--probe_epochs=20", "--finetune_epochs=20",
       "--embedding_points=500")
ADAPTATION_METHODS = ("source_only", "dann", "finetune", "target_oracle")
# experiments/domain_adaptation.yaml's protocol (ADDA's 2,000 MNIST and
# 1,800 USPS images, LeNet-5, DANN's annealed learning rate), 15 epochs
# instead of 60 and a 1,000-image test slice.
ADAPTATION = ("--source=mnist", "--target=usps", "--model=lenet5",
              "--train_limit=2000", "--target_train_limit=1800",
              "--test_limit=1000", "--epochs=15", "--optimizer=momentum",
              "--lr=0.01", "--dann_anneal_lr")

# The project's result folders, in the order the chapter discusses them;
# any other results/**/README.md found is embedded after them.
# Tables chapters 7 and 8 link to instead.
LINKED_ELSEWHERE = ("interpret/README.md", "export/README.md")
RESULTS: Tuple[Tuple[str, str, str], ...] = (
    ("federated", "mcmahan/README.md", "experiments/mcmahan.yaml"),
    ("federated", "niid_bench/README.md",
     "experiments/niid_bench_extended.yaml"),
    ("federated", "adaptive/README.md", "experiments/adaptive.yaml"),
    ("federated", "personalization/README.md",
     "experiments/personalization.yaml"),
    ("federated", "robustness/README.md", "experiments/robustness.yaml"),
    ("federated", "robustness_100_rounds/README.md",
     "experiments/robustness_100_rounds.yaml"),
    ("federated", "communication/README.md",
     "experiments/communication.yaml"),
    ("ssl", "ssl/centralized/README.md", "experiments/ssl_centralized.yaml"),
    ("ssl", "ssl/federated/README.md", "experiments/ssl_federated.yaml"),
    ("ssl", "ssl/federated_methods/README.md",
     "experiments/ssl_federated_methods.yaml"),
    ("ssl", "ssl/comparison.md", "experiments/ssl_comparison.yaml"),
    ("ssl", "ssl/cifar10/README.md", "experiments/ssl_cifar10.yaml"),
    ("ssl", "ssl/methods/README.md", "experiments/ssl_methods.yaml"),
    ("ssl", "ssl/init_encoder/README.md", "experiments/ssl_init_encoder.yaml"),
    ("ssl", "ssl/pretraining_for_fl/README.md",
     "experiments/ssl_pretraining_for_fl.yaml"),
    ("adaptation", "domain_adaptation/README.md",
     "experiments/domain_adaptation.yaml"),
    ("adaptation", "domain_adaptation/full/README.md",
     "experiments/domain_adaptation_full.yaml"),
    ("adaptation", "domain_adaptation/ssl_union/README.md",
     "experiments/domain_adaptation_ssl_union.yaml"),
    ("adaptation", "domain_adaptation/selftraining/README.md",
     "experiments/domain_adaptation_selftraining.yaml"),
    ("adaptation", "domain_adaptation/federated/README.md",
     "experiments/domain_adaptation_federated.yaml"),
)
TOPICS = ("federated", "ssl", "adaptation", "other")


def federated_commands(paths: core.Paths):
  return {name: Command("simulations.federated", (
      *FEDERATED, *extra, f"--out_dir={paths.run('ch09', 'federated', name)}"))
          for name, extra in FEDERATED_RUNS.items()}


def personalization_commands(paths: core.Paths):
  return {name: Command("simulations.federated", (
      *FEDERATED, *PERSONAL, *extra,
      f"--out_dir={paths.run('ch09', 'personalization', name)}"))
          for name, extra in PERSONAL_RUNS.items()}


def ssl_command(paths: core.Paths) -> Command:
  return Command("simulations.ssl_pretrain",
                 (*SSL, f"--out_dir={paths.run('ch09', 'ssl_simclr')}"))


def adaptation_commands(paths: core.Paths):
  return {m: Command("simulations.domain_adaptation", (
      *ADAPTATION, f"--method={m}",
      f"--out_dir={paths.run('ch09', 'adaptation', m)}"))
          for m in ADAPTATION_METHODS}


def _federated(ctx: core.Context) -> None:
  # pylint: disable=g-import-not-at-top
  from fedclf.results import curves
  from fedclf.results import tables
  # pylint: enable=g-import-not-at-top
  commands = federated_commands(ctx.paths)
  ctx.run_all(list(commands.values()))
  root = ctx.paths.run("ch09", "federated")
  text = tables.results_table(tables.load_runs(root),
                              "The guide's federated runs (digits, cnn)")
  ctx.write_output("ch09_federated.md", core.demote_headings(text))
  ctx.write_output("ch09_federated_commands.md",
                   core.bash_block(list(commands.values())[:2]))
  central = core.read_json(os.path.join(
      commands["fedavg_iid"].out_dir(), "centralized", "summary.json"))
  curves.plot_round_curves(
      {n: curves.read_curve(c.out_dir()) for n, c in commands.items()},
      ctx.figure("ch09_federated.png"),
      "cnn on digits, 20 clients, 5 per round",
      {"centralized": central["test_accuracy"]})
  for name in ("fedavg_iid", "fedavg_dirichlet0.1"):
    core.copy_figure(os.path.join(commands[name].out_dir(), "partition.png"),
                     ctx.figure(f"ch09_partition_{name}.png"))


def _personalization(ctx: core.Context) -> None:
  commands = personalization_commands(ctx.paths)
  ctx.run_all(list(commands.values()))
  rows = []
  for name, command in commands.items():
    s = core.read_json(os.path.join(command.out_dir(), "summary.json"))
    rows.append([f"`{name}`", f"{s['final_test_accuracy']:.4f}",
                 f"{s['final_global_on_clients_accuracy_mean']:.4f}",
                 f"{s['final_personal_accuracy_mean']:.4f}",
                 f"{s['final_personal_accuracy_p10']:.4f}"])
  ctx.write_output("ch09_personalization_commands.md",
                   core.bash_block(list(commands.values())[1:3]))
  ctx.write_output("ch09_personalization.md", core.markdown_table(
      ["run (Dirichlet(0.1) clients)", "global model, pooled test set",
       "global model, clients' own held-out 20% (mean)",
       "personal models, own held-out 20% (mean)",
       "personal models, p10 over clients"], rows))


def _ssl(ctx: core.Context) -> None:
  command = ssl_command(ctx.paths)
  s = ctx.run_shown(command, "ch09_ssl")
  rows = [["linear probe on the frozen encoder",
           f"{s['linear_probe_accuracy']:.4f}",
           f"{s['random_init_linear_probe_accuracy']:.4f}"],
          ["kNN (k=20) on the frozen encoder's features",
           f"{s['knn_accuracy']:.4f}", f"{s['random_init_knn_accuracy']:.4f}"],
          ["5% of the labels (100 images): fine-tuned vs from scratch",
           f"{s['finetune_accuracy_5']:.4f}",
           f"{s['supervised_accuracy_5']:.4f}"]]
  ctx.write_output("ch09_ssl.md", core.markdown_table(
      ["evaluation (1,000 MNIST test images)", "SimCLR-pretrained encoder",
       "random-init encoder / from scratch"], rows))
  core.copy_figure(os.path.join(command.out_dir(), "embeddings.png"),
                   ctx.figure("ch09_ssl_embeddings.png"))


def _adaptation(ctx: core.Context) -> None:
  commands = adaptation_commands(ctx.paths)
  ctx.run_all(list(commands.values()))
  rows = []
  for method, command in commands.items():
    s = core.read_json(os.path.join(command.out_dir(), "summary.json"))
    rows.append([f"`{method}`", f"{s['source_accuracy']:.4f}",
                 f"{s['target_accuracy']:.4f}", f"{s['target_macro_f1']:.4f}"])
  ctx.write_output("ch09_adaptation_commands.md",
                   core.bash_block(list(commands.values())))
  ctx.write_output("ch09_adaptation.md", core.markdown_table(
      ["method", "MNIST (source) test accuracy", "USPS (target) test accuracy",
       "USPS macro F1"], rows))


def _embed(rel: str, results_dir: str) -> str:
  """A results Markdown file, headings demoted and relative links pointing
  from the guide (docs/guide/) into the repository's results/ folder."""
  path = os.path.join(results_dir, rel)
  folder = os.path.dirname(rel)

  def relink(match):
    text, target = match.group(1), match.group(2)
    if "://" in target or target.startswith("#"):
      return match.group(0)
    inside = os.path.normpath(os.path.join(folder, target))
    return f"{text}(../../results/{inside})"

  text = core.demote_headings(core.read_text(path).strip())
  return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", relink, text)


def results_sections(results_dir: str) -> List[Tuple[str, str]]:
  """(topic, Markdown) per results table, including files not yet listed in
  RESULTS; a listed table that does not exist yet says how to make it."""
  sections = []
  listed = set()
  for topic, rel, spec in RESULTS:
    listed.add(rel)
    if os.path.exists(os.path.join(results_dir, rel)):
      sections.append((topic, _embed(rel, results_dir)))
    else:
      command = ("python -m simulations.tables --compare=" + spec +
                 f" --out={os.path.join(results_dir, rel)}"
                 if rel.endswith("comparison.md") else
                 f"python -m simulations.reproduce --spec={spec}")
      sections.append((topic, f"*`{os.path.join(results_dir, rel)}` is not "
                              f"there yet; it comes from `{command}`.*"))
  others = []
  for root, _, files in sorted(os.walk(results_dir)):
    if "README.md" in files:
      rel = os.path.relpath(os.path.join(root, "README.md"), results_dir)
      # A table added after this chapter was written.
      if rel not in listed and rel not in LINKED_ELSEWHERE:
        others.append(rel)
  for rel in others:
    sections.append(("other", _embed(rel, results_dir)))
  return sections


def _results(ctx: core.Context) -> None:
  by_topic = {}
  for topic, text in results_sections(ctx.paths.results_dir):
    by_topic.setdefault(topic, []).append(text)
  for topic in TOPICS:
    ctx.write_output(f"ch09_results_{topic}.md", "\n\n".join(
        by_topic.get(topic, ["*No other result tables yet.*"])) + "\n")


CHAPTER = core.Chapter(9, "09-advanced", "Advanced topics", (
    core.Step("ch09.federated", (
        "outputs/ch09_federated.md", "outputs/ch09_federated_commands.md",
        "figures/ch09_federated.png",
        "figures/ch09_partition_fedavg_iid.png",
        "figures/ch09_partition_fedavg_dirichlet0.1.png"), _federated,
              run_dirs=tuple(f"ch09/federated/{n}" for n in FEDERATED_RUNS)),
    core.Step("ch09.personalization", (
        "outputs/ch09_personalization.md",
        "outputs/ch09_personalization_commands.md"), _personalization,
              run_dirs=tuple(f"ch09/personalization/{n}"
                             for n in PERSONAL_RUNS)),
    core.Step("ch09.ssl", ("outputs/ch09_ssl_command.md",
                           "outputs/ch09_ssl_output.txt", "outputs/ch09_ssl.md",
                           "figures/ch09_ssl_embeddings.png"), _ssl,
              run_dirs=("ch09/ssl_simclr",)),
    core.Step("ch09.adaptation", ("outputs/ch09_adaptation_commands.md",
                                  "outputs/ch09_adaptation.md"), _adaptation,
              run_dirs=tuple(f"ch09/adaptation/{m}"
                             for m in ADAPTATION_METHODS)),
    # Other sessions keep filling results/, so this step reruns every build.
    core.Step("ch09.results", tuple(f"outputs/ch09_results_{t}.md"
                                    for t in TOPICS), _results,
              always=True),
))
