r"""Domain adaptation: train on a source domain, score on a target domain.

  python -m simulations.domain_adaptation --source=mnist --target=usps \
      --method=dann --model=cnn --epochs=10 --lr=0.01 --out_dir=runs/da

Methods (--method, see --list): source_only (lower bound), target_oracle
(trained on the labelled target: upper bound), dann (domain-adversarial
training), cdan (conditional adversarial, CDAN+E), mdd (margin disparity
discrepancy), finetune (source model fine-tuned on
--target_labels_per_class labelled target examples per class), fixmatch
(FixMatch self-training: the model's confident predictions on weakly
augmented target images, >= --fixmatch_threshold, teach its predictions on
strongly augmented ones; --fixmatch_weight, --fixmatch_ratio,
--fixmatch_warmup_epochs, --fixmatch_align). Every method returns its last
epoch's model (no target label selects it). Writes config.json,
metrics.jsonl,
summary.json (target_accuracy, source_accuracy, ...), confusion_matrix.png
(target test set), model.keras and checkpoints/ to --out_dir; --seeds=0,1,2
repeats the run into out_dir/seed_<s> and summarizes mean and std. Each
method's own hyper-parameters are flags named as its params fields
(--dann_hidden, --dann_weight, ... for dann, shared schedule flags
--dann_gamma, --dann_anneal_lr, ... for dann, cdan and mdd; --cdan_*,
--mdd_*; --target_labels_per_class,
--finetune_epochs, ... for finetune; --helpfull lists them).

Any method can start from an encoder contrastively pretrained on both
domains' unlabelled training images:

  python -m simulations.ssl_pretrain --dataset=domains:mnist+usps \
      --model=lenet5 --method=simclr --out_dir=runs/ssl_mnist_usps
  python -m simulations.domain_adaptation --source=mnist --target=usps \
      --model=lenet5 --method=fixmatch --init_encoder=runs/ssl_mnist_usps

(the mixture datasets `domains:a+b` hold both domains' images at this
binary's 28x28 and channel alignment; see --init_encoder, --freeze_encoder).

--mode says where the training happens:
- centralized (default): one model on the pooled source data, as above.
- federated: clients that each hold the source or the target domain, the
  target clients unlabelled; --method (source_only, dann, self_training,
  fixmatch or target_oracle) picks FedAvg over the labelled source clients
  (source_only), FedAvg with DANN's domain-adversarial loss on every client
  (dann), FedAvg with the target clients training on their confident
  pseudo-labels after --warmup_rounds (self_training), the same with
  FixMatch's per-batch pseudo-labels on weak views teaching strong views
  (fixmatch; threshold --pseudo_label_threshold), or every client labelled
  (target_oracle); --num_clients are split evenly between the domains, each
  domain's clients IID or label-skewed (--within_domain_alpha). Reports the
  global model's accuracy on each domain's test set.
- federated_labelled: every client labelled, --algorithm (any registered
  federated algorithm) on the federated simulation engine over the mixed
  domains; the same per-domain report.
--federated is the older spelling of --mode=federated.
"""

import dataclasses
from typing import Any

from absl import flags

from fedclf import cli
from fedclf import registry
from fedclf.errors import UserError

cli.define_common_flags()
flags.DEFINE_string("source", "mnist",
                    "Source domain: mnist, usps, mnist_m, "
                    "mnist_corrupted[/corruption].")
flags.DEFINE_string("target", "usps", "Target domain (as --source).")
flags.DEFINE_string("method", "source_only",
                    "Registered adaptation method: source_only, "
                    "Registered adaptation method: source_only, "
                    "target_oracle, dann, cdan, mdd, finetune, fixmatch "
                    "(see --list).")
flags.DEFINE_string("data_dir", "",
                    "Data directory (default $FEDCLF_DATA_DIR, else "
                    "~/.cache/fedclf).")
flags.DEFINE_bool("download", True,
                  "Allow downloads when local files are missing.")
flags.DEFINE_integer("image_size", 28, "Common square image size.")
flags.DEFINE_enum("channels", "auto", ["auto", "1", "3"],
                  "Common channel count; auto: 3 when either domain is "
                  "colour (grayscale is replicated), else 1.")
flags.DEFINE_integer("train_limit", 0,
                     "Seeded slice of each domain's training set (0 = all; "
                     "federated modes: of the mixed training set).")
flags.DEFINE_integer("target_train_limit", -1,
                     "Seeded slice of the target's training set when it "
                     "differs from --train_limit (ADDA's MNIST -> USPS: "
                     "2000 and 1800; 0 = all); -1: as --train_limit. Not "
                     "with the federated modes.")
flags.DEFINE_integer("test_limit", 0,
                     "Seeded slice of each domain's test set (0 = all; "
                     "federated modes: also of the mixed test set).")
flags.DEFINE_enum("normalization", "per_domain",
                  ["source", "pooled", "per_domain"],
                  "Input standardization: per_domain (each domain with its "
                  "own training statistics; target labels are not read), "
                  "pooled (both with the pooled statistics) or source (both "
                  "with the source's).")
flags.DEFINE_integer("mnist_m_seed", 0,
                     "Seed of the MNIST-M generator (fixed across --seeds).")
cli.define_model_flags("batch", "Normalization layers (ResNets).")
cli.define_init_encoder_flags()
cli.define_optimizer_flags("", "momentum", 0.01)
flags.DEFINE_integer("epochs", 10,
                     "Training epochs: passes over the source (the "
                     "oracle's: over the target).")
flags.DEFINE_integer("batch_size", 64,
                     "Batch size (dann, cdan, mdd: this many source plus "
                     "this many target images per step).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing in [0, 1).")
flags.DEFINE_integer("eval_every", 1,
                     "dann, cdan, mdd: log the target test accuracy every "
                     "N epochs "
                     "(a learning curve only; 0 = at the end only).")
flags.DEFINE_list("seeds", [],
                  "Run once per seed (into out_dir/seed_<s>) and report "
                  "mean and std; empty: one run with --seed.")
flags.DEFINE_enum("mode", "centralized",
                  ["centralized", "federated", "federated_labelled"],
                  "centralized: train on the source, score on the target; "
                  "federated: source clients labelled, target clients "
                  "unlabelled (--method); federated_labelled: every client "
                  "labelled (--algorithm). See the module help.")
flags.DEFINE_bool("federated", False,
                  "Same as --mode=federated (the older spelling).")
flags.DEFINE_string("algorithm", "fedavg",
                    "--mode=federated_labelled: registered federated "
                    "algorithm.")
flags.DEFINE_integer("num_clients", 10,
                     "federated modes: clients (split evenly between "
                     "domains).")
flags.DEFINE_integer("eval_rounds", 5,
                     "--mode=federated: score both test sets every "
                     "N rounds (and after the last).")
flags.DEFINE_integer("warmup_rounds", 10,
                     "--mode=federated --method=self_training|fixmatch: "
                     "source-only rounds before the target clients "
                     "pseudo-label.")
flags.DEFINE_float("pseudo_label_threshold", 0.9,
                   "--mode=federated --method=self_training|fixmatch: "
                   "softmax probability a prediction needs to become a "
                   "training label.")
flags.DEFINE_float("within_domain_alpha", 0.0,
                   "--mode=federated: label skew of the clients within "
                   "each domain, the Dirichlet concentration (smaller: "
                   "more skewed); 0 = IID shares.")
flags.DEFINE_integer("clients_per_round", 10,
                     "federated modes: clients sampled per round.")
flags.DEFINE_integer("rounds", 20, "federated modes: communication rounds.")
flags.DEFINE_integer("local_epochs", 1, "federated modes: local epochs.")
flags.DEFINE_integer("local_batch_size", 32, "federated modes: local batch "
                     "size.")
flags.DEFINE_float("client_lr", 0.05, "federated modes: client learning "
                   "rate.")
cli.define_run_flags("runs/domain_adaptation", "epochs (rounds in "
                     "the federated modes)", 1,
                     "Seed for data slices, init, shuffles and partition.")
# Each method's own hyper-parameters (dann's --dann_hidden, --dann_weight,
# ...; finetune's --target_labels_per_class, --finetune_epochs, ...; a
# --plugin method's), generated from the params dataclasses registered
# beside the methods.
cli.define_params_flags(registry.ADAPTATION_METHODS)

FLAGS = flags.FLAGS


def _adapt_config(params: Any):
  from fedclf.adapt import AdaptConfig  # pylint: disable=g-import-not-at-top
  from fedclf.train import TrainConfig  # pylint: disable=g-import-not-at-top
  return AdaptConfig(
      train=TrainConfig(
          epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
          optimizer=cli.optimizer_config_from_flags(""),
          label_smoothing=FLAGS.label_smoothing,
          checkpoint_every=FLAGS.checkpoint_every, seed=FLAGS.seed),
      params=params, eval_every=FLAGS.eval_every,
      normalization=FLAGS.normalization)


def _adapt_run_config(params_of: str):
  """The run's config, with the params of method `params_of`."""
  from fedclf.adapt import AdaptRunConfig  # pylint: disable=g-import-not-at-top
  from fedclf.adapt import DomainLimits  # pylint: disable=g-import-not-at-top
  return AdaptRunConfig(
      source=FLAGS.source, target=FLAGS.target, method=FLAGS.method,
      image_size=FLAGS.image_size,
      channels=0 if FLAGS.channels == "auto" else int(FLAGS.channels),
      limits=DomainLimits(FLAGS.train_limit, FLAGS.test_limit),
      target_limits=(None if FLAGS.target_train_limit == -1 else
                     DomainLimits(FLAGS.target_train_limit,
                                  FLAGS.test_limit)),
      data_dir=FLAGS.data_dir, download=FLAGS.download,
      mnist_m_seed=FLAGS.mnist_m_seed, model_name=FLAGS.model,
      model=cli.model_config_from_flags(),
      adapt=_adapt_config(cli.params_from_flags(
          registry.ADAPTATION_METHODS, params_of)),
      seed=FLAGS.seed)


def _run_federated_uda():
  from fedclf.adapt import FEDERATED_METHODS  # pylint: disable=g-import-not-at-top
  from fedclf.adapt import FederatedAdaptConfig  # pylint: disable=g-import-not-at-top
  from fedclf.adapt import run_federated_uda  # pylint: disable=g-import-not-at-top

  if FLAGS.method not in FEDERATED_METHODS:
    raise UserError(f"--mode=federated runs --method="
                    f"{'|'.join(FEDERATED_METHODS)}, got {FLAGS.method!r}")
  if FLAGS.seeds:
    raise UserError("the federated modes run one seed (--seed); --seeds does "
                    "not apply")
  if FLAGS["algorithm"].present and FLAGS.algorithm != "fedavg":
    raise UserError("--mode=federated federates by FedAvg; --algorithm "
                    "applies to --mode=federated_labelled")
  federated = FederatedAdaptConfig(
      source_clients=FLAGS.num_clients - FLAGS.num_clients // 2,
      target_clients=FLAGS.num_clients // 2,
      clients_per_round=FLAGS.clients_per_round, rounds=FLAGS.rounds,
      local_epochs=FLAGS.local_epochs,
      local_batch_size=FLAGS.local_batch_size, client_lr=FLAGS.client_lr,
      eval_every=FLAGS.eval_rounds, checkpoint_every=FLAGS.checkpoint_every,
      seed=FLAGS.seed, warmup_rounds=FLAGS.warmup_rounds,
      pseudo_label_threshold=FLAGS.pseudo_label_threshold,
      within_domain_alpha=FLAGS.within_domain_alpha)
  # Every federated method trains DANN's model: the params are DANN's.
  summary = run_federated_uda(_adapt_run_config("dann"), federated,
                               FLAGS.out_dir, cli.flag_values_dict(),
                               FLAGS.resume)
  print(f"federated {FLAGS.method} {FLAGS.source} -> {FLAGS.target}: "
        f"global model test accuracy {FLAGS.target} "
        f"{summary['target_accuracy']:.4f}, {FLAGS.source} "
        f"{summary['source_accuracy']:.4f}  -> {FLAGS.out_dir}/summary.json")


def _run_federated():
  from fedclf import federated  # pylint: disable=g-import-not-at-top
  from fedclf.adapt import DomainLimits  # pylint: disable=g-import-not-at-top
  from fedclf.adapt import federated_domain_config  # pylint: disable=g-import-not-at-top
  from fedclf.adapt import run_federated_adaptation  # pylint: disable=g-import-not-at-top
  from fedclf.registry import ALGORITHMS  # pylint: disable=g-import-not-at-top

  if FLAGS.seeds:
    raise UserError("the federated modes run one seed (--seed); --seeds does "
                    "not apply")
  if FLAGS["method"].present:
    raise UserError("--mode=federated_labelled trains every client on its "
                    "labels with --algorithm; --method applies to "
                    "--mode=centralized and --mode=federated")
  if FLAGS["target_train_limit"].present:
    raise UserError("--mode=federated_labelled slices the mixed training set "
                    "with --train_limit; --target_train_limit does not apply")
  if FLAGS.channels != "auto":
    raise UserError("--mode=federated_labelled picks the channels itself "
                    "(colour when "
                    "any domain is); leave --channels=auto")
  ALGORITHMS.get(FLAGS.algorithm)
  simulation = federated.SimulationConfig(
      algorithm=FLAGS.algorithm,
      algorithm_config=federated.AlgorithmConfig(
          client_lr=FLAGS.client_lr, local_epochs=FLAGS.local_epochs,
          local_batch_size=FLAGS.local_batch_size),
      num_clients=FLAGS.num_clients,
      clients_per_round=FLAGS.clients_per_round,
      rounds=FLAGS.rounds,
      checkpoint_every=FLAGS.checkpoint_every,
      seed=FLAGS.seed)
  config = federated_domain_config(
      (FLAGS.source, FLAGS.target), simulation, FLAGS.model,
      cli.model_config_from_flags(), FLAGS.image_size,
      DomainLimits(FLAGS.train_limit, FLAGS.test_limit), FLAGS.data_dir,
      FLAGS.download, FLAGS.seed)
  summary = run_federated_adaptation(config, FLAGS.out_dir,
                                     cli.flag_values_dict(), FLAGS.resume)
  scores = "  ".join(f"{name} {acc:.4f}" for name, acc in
                     summary["domain_accuracy"].items())
  print(f"{FLAGS.algorithm} over {summary['domain_clients']} clients: "
        f"global model test accuracy {scores}  -> "
        f"{FLAGS.out_dir}/summary.json")


def _mode() -> str:
  """--mode, with --federated as its older spelling of `federated`."""
  if not FLAGS.federated:
    return FLAGS.mode
  if FLAGS.mode not in ("centralized", "federated"):
    raise UserError(f"--federated means --mode=federated; it contradicts "
                    f"--mode={FLAGS.mode}")
  return "federated"


def main(argv):
  del argv
  mode = _mode()
  if mode != "centralized" and (FLAGS.init_encoder or FLAGS.freeze_encoder or
                                FLAGS.standardize_encoder_features):
    raise UserError("--init_encoder, --freeze_encoder and "
                    "--standardize_encoder_features apply to "
                    "--mode=centralized only")
  if mode == "federated":
    _run_federated_uda()
    return
  if mode == "federated_labelled":
    _run_federated()
    return
  # Already loaded by cli.define_params_flags; imported here by name.
  from fedclf.adapt import run_adaptation  # pylint: disable=g-import-not-at-top
  from fedclf.adapt import run_adaptation_seeds  # pylint: disable=g-import-not-at-top
  from fedclf.models.pretrained import EncoderInit  # pylint: disable=g-import-not-at-top
  from fedclf.plugin_config import parse_int_tuple  # pylint: disable=g-import-not-at-top

  config = dataclasses.replace(
      _adapt_run_config(FLAGS.method),
      encoder_init=EncoderInit(FLAGS.init_encoder, FLAGS.freeze_encoder))
  if FLAGS.seeds:
    summary = run_adaptation_seeds(
        config, parse_int_tuple("seeds", FLAGS.seeds), FLAGS.out_dir,
        cli.flag_values_dict(), FLAGS.resume)
    print(f"{FLAGS.method} {FLAGS.source} -> {FLAGS.target} over seeds "
          f"{summary['seeds']}: target accuracy "
          f"{summary['target_accuracy_mean']:.4f} +- "
          f"{summary['target_accuracy_std']:.4f}, source accuracy "
          f"{summary['source_accuracy_mean']:.4f}  -> "
          f"{FLAGS.out_dir}/summary.json")
    return
  summary = run_adaptation(config, FLAGS.out_dir, cli.flag_values_dict(),
                           FLAGS.resume)
  print(f"{FLAGS.method} {FLAGS.source} -> {FLAGS.target}: target accuracy "
        f"{summary['target_accuracy']:.4f} (macro F1 "
        f"{summary['target_macro_f1']:.4f}), source accuracy "
        f"{summary['source_accuracy']:.4f}  -> {FLAGS.out_dir}/summary.json")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
