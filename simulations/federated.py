r"""Federated simulation: partition a dataset across clients, train a zoo
model with a federated algorithm, compare with centralized training.

  python -m simulations.federated --dataset=mnist --model=cnn \
      --algorithm=fedavg --partition=shards --num_clients=100 \
      --clients_per_round=10 --local_epochs=5 --local_batch_size=10 \
      --client_lr=0.1 --rounds=300 --target_accuracy=0.99 --out_dir=runs/x

Flags can come from a file: --flagfile=experiments/mcmahan_cnn_iid.cfg.
Each algorithm's and partitioner's own hyper-parameters are flags named as
their params fields (--prox_mu, --dirichlet_alpha, ...; a --plugin module's
too, listed by --helpfull); one that the chosen algorithm or partitioner does
not read is ignored with a warning.
Writes config.json, metrics.jsonl (one row per round), summary.json,
partition.json/.png, tb/ (TensorBoard) and checkpoints/ to --out_dir.
"""

from absl import flags

from fedclf import cli
from fedclf import registry

cli.define_common_flags()
cli.define_data_flags("mnist")
cli.define_model_flags(
    "group", "Normalization layers of models that have them (GroupNorm by "
    "default: BatchNorm statistics suffer under non-IID clients).")
flags.DEFINE_string("algorithm", "fedavg",
                    "Registered federated algorithm (see --list).")
flags.DEFINE_string("aggregator", "",
                    "Registered aggregator (see --list: mean, median, "
                    "trimmed_mean, krum, multi_krum, norm_bound, "
                    "centered_clip) in place of the algorithm's own; empty "
                    "= the algorithm's.")
flags.DEFINE_float("malicious_fraction", 0.0,
                   "Share of the clients that attack (a fixed, seeded set, "
                   "written to malicious_clients.json); 0 = none.")
flags.DEFINE_enum("attack", "sign_flip",
                  ["sign_flip", "scaled", "gaussian_noise", "label_flip"],
                  "What malicious clients do: sign_flip (update -> "
                  "-attack_scale * update), scaled (+attack_scale * update, "
                  "model replacement), gaussian_noise (update -> "
                  "N(0, attack_noise_std^2)), label_flip (train on y -> "
                  "C-1-y).")
flags.DEFINE_float("attack_scale", 10.0,
                   "sign_flip and scaled attacks: the update's factor.")
flags.DEFINE_float("attack_noise_std", 1.0,
                   "gaussian_noise attack: std of the noise update.")
flags.DEFINE_string("objective", "supervised",
                    "supervised, or a self-supervised method (simclr, "
                    "simsiam, barlow_twins, vicreg, byol): federated SSL "
                    "pretraining of the encoder, evaluated by kNN and a "
                    "final linear probe. byol keeps each client's target "
                    "network as client state; --algorithm=fedema adds "
                    "FedEMA's divergence-aware local EMA.")
flags.DEFINE_float("ssl_temperature", 0.5, "simclr: softmax temperature.")
flags.DEFINE_integer("ssl_projection_dim", 128, "SSL projector output width.")
flags.DEFINE_integer("ssl_hidden_dim", 512, "SSL projector hidden width.")
flags.DEFINE_enum("ssl_projector_norm", "batch", ["batch", "none"],
                  "Normalization inside the SSL projector/predictor.")
flags.DEFINE_string("partition", "iid",
                    "Registered partitioner: iid, dirichlet, shards, "
                    "labels_per_client, quantity_skew, natural, ...")
flags.DEFINE_integer("num_clients", 100, "Simulated clients.")
flags.DEFINE_integer("clients_per_round", 10, "Clients sampled per round.")
flags.DEFINE_integer("rounds", 50, "Communication rounds.")
flags.DEFINE_integer("local_epochs", 1, "Local epochs per round (E).")
flags.DEFINE_integer("local_batch_size", 10,
                     "Local batch size (B); 0 = the whole client dataset.")
flags.DEFINE_enum("client_optimizer", "sgd", ["sgd", "momentum"],
                  "Client optimizer.")
flags.DEFINE_float("client_lr", 0.1, "Client learning rate.")
flags.DEFINE_float("client_momentum", 0.9, "client_optimizer=momentum only.")
flags.DEFINE_float("client_weight_decay", 0.0,
                   "L2 weight decay of the client optimizer (added to the "
                   "gradient as decay * w, as PyTorch SGD does).")
flags.DEFINE_enum("server_optimizer", "sgd",
                  ["sgd", "momentum", "adam", "yogi", "adagrad"],
                  "Server optimizer on the averaged delta (fedadam, fedyogi "
                  "and fedavgm choose theirs).")
flags.DEFINE_float("server_lr", 0.0,
                   "Server learning rate; 0 = the algorithm's default (1.0 "
                   "for SGD/momentum, 0.01 for adaptive optimizers).")
flags.DEFINE_float("server_momentum", 0.0,
                   "Server momentum (0 = fedavgm's default 0.9).")
flags.DEFINE_float("server_beta_1", 0.9, "Adaptive server optimizers.")
flags.DEFINE_float("server_beta_2", 0.99, "Adaptive server optimizers.")
flags.DEFINE_float("server_epsilon", 1e-3, "Adaptive server optimizers' tau.")
flags.DEFINE_float("client_dropout", 0.0,
                   "Chance that a sampled client fails to report.")
flags.DEFINE_float("straggler_fraction", 0.0,
                   "Chance that a client finishes only part of its steps.")
flags.DEFINE_integer("max_local_steps", 0,
                     "Cap on local steps per client and round (0 = none).")
flags.DEFINE_integer("eval_every", 1, "Evaluate every N rounds.")
flags.DEFINE_integer("per_client_eval", 20,
                     "Clients whose local accuracy is measured at eval.")
flags.DEFINE_float("target_accuracy", 0.0,
                   "Report the first round whose test accuracy reaches this.")
flags.DEFINE_bool("stop_at_target", False,
                  "Stop once --target_accuracy is reached.")
cli.define_input_scaling_flag()
cli.define_init_encoder_flags()
flags.DEFINE_float("max_train_loss", 0.0,
                   "Stop as diverged when the mean client loss of a round "
                   "exceeds this (0 = only on NaN/Inf).")
flags.DEFINE_float("client_test_fraction", 0.0,
                   "Share of each client's examples held out as its own "
                   "test part, where its personal model is scored "
                   "(personal_accuracy_*); 0 = off.")
flags.DEFINE_integer("finetune_steps", 0,
                     "Local fine-tuning SGD steps before a client's personal "
                     "model is scored (0 = the algorithm's own).")
flags.DEFINE_float("finetune_lr", 0.0, "Fine-tuning lr (0 = client_lr).")
flags.DEFINE_float("label_fraction", 1.0,
                   "Share of each client's training examples that carry "
                   "labels (seeded per client, at least one each): "
                   "supervised training reads only those (the "
                   "semi-supervised setting of federated SSL; "
                   "--init_encoder starts it from a pretrained encoder).")
flags.DEFINE_integer("centralized_epochs", 0,
                     "Also train the same model centrally for this many "
                     "epochs (into out_dir/centralized), on the clients' "
                     "training examples (their labelled share with "
                     "--label_fraction), and compare.")
flags.DEFINE_float("val_fraction", 0.0,
                   "Hold out this share of the training set (stratified) "
                   "before partitioning and report val_accuracy at each "
                   "evaluation, for choosing hyper-parameters without the "
                   "test set.")
flags.DEFINE_string("backend", "local",
                    "Registered backend (see --list): local (in-process "
                    "TensorFlow) or tff (TFF's runtime).")
flags.DEFINE_integer("parallel_clients", 0,
                     "local backend: clients trained concurrently in one "
                     "graph (0 = one per CPU core, at least 2).")
flags.DEFINE_enum("client_batching", "auto", ["auto", "on", "off"],
                  "local backend: train groups of clients as one batched "
                  "computation on stacked weights (on), in model replicas "
                  "(off), or batched where the model and algorithm allow "
                  "it and it measured at least as fast on CPU: models "
                  "up to 2^20 weights per client, e.g. mlp and lenet5 "
                  "(auto; otherwise replicas, with a log line saying "
                  "why).")
flags.DEFINE_list("tff_workers", [],
                  "tff backend: host:port of running TFF workers (start "
                  "them with python -m simulations.tff_worker --port=N); "
                  "empty = one local worker owned by this run.")
flags.DEFINE_string("tff_data_dir", "",
                    "tff backend: folder, at the same path on every TFF "
                    "worker's machine, where the workers read the training "
                    "arrays (this run writes them there; workers on other "
                    "machines need a shared folder or a copy). Empty = a "
                    "folder in this machine's temp dir.")
flags.DEFINE_integer("tff_clients_per_call", 0,
                     "tff backend: the most clients a worker trains in one "
                     "call (a slice of the round; weighted-mean rounds "
                     "train a slice's clients one after another and sum "
                     "their updates, others hold every client of a call "
                     "at once). 0 = the default (10).")
flags.DEFINE_enum("compression", "none", ["none", "topk", "quantize"],
                  "Upload codec of the clients' model delta, with any "
                  "algorithm: topk (largest entries per tensor, error "
                  "feedback) or quantize (stochastic uniform).")
flags.DEFINE_float("topk_fraction", 0.1,
                   "compression=topk: share of each tensor's entries sent.")
flags.DEFINE_integer("quantize_bits", 8,
                     "compression=quantize: bits per entry (1..16).")
cli.define_run_flags("runs/federated", "rounds", 10,
                     "Seed for partition, sampling, init, batches and noise.")
# The algorithms' and partitioners' own hyper-parameters (--prox_mu,
# --dirichlet_alpha, ..., and those of --plugin modules), generated from the
# params dataclasses registered beside their factories.
cli.define_params_flags(registry.ALGORITHMS, registry.PARTITIONERS,
                        registry.AGGREGATORS)

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # Already loaded by cli.define_params_flags; imported here by name.
  from fedclf import federated  # pylint: disable=g-import-not-at-top
  from fedclf.models.pretrained import EncoderInit  # pylint: disable=g-import-not-at-top
  from fedclf.partition import PartitionConfig  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import SslConfig  # pylint: disable=g-import-not-at-top
  from fedclf.ssl.methods.simclr import SimClrParams  # pylint: disable=g-import-not-at-top

  registry.DATASETS.get(FLAGS.dataset)
  partition_params = cli.params_from_flags(registry.PARTITIONERS,
                                           FLAGS.partition)
  algorithm_params = cli.params_from_flags(registry.ALGORITHMS,
                                           FLAGS.algorithm)
  registry.BACKENDS.get(FLAGS.backend)
  aggregator_params = (cli.params_from_flags(registry.AGGREGATORS,
                                             FLAGS.aggregator)
                       if FLAGS.aggregator else None)
  algorithm_config = federated.AlgorithmConfig(
      client_optimizer=FLAGS.client_optimizer,
      client_lr=FLAGS.client_lr,
      client_momentum=FLAGS.client_momentum,
      client_weight_decay=FLAGS.client_weight_decay,
      local_epochs=FLAGS.local_epochs,
      local_batch_size=FLAGS.local_batch_size,
      server=federated.ServerOptimizerConfig(
          name=FLAGS.server_optimizer, learning_rate=FLAGS.server_lr,
          momentum=FLAGS.server_momentum, beta_1=FLAGS.server_beta_1,
          beta_2=FLAGS.server_beta_2, epsilon=FLAGS.server_epsilon))
  config = federated.FederatedRunConfig(
      data=cli.data_config_from_flags(FLAGS.seed),
      partitioner=FLAGS.partition,
      partition=PartitionConfig(
          num_clients=FLAGS.num_clients, seed=FLAGS.seed,
          params=partition_params),
      model_name=FLAGS.model,
      model=cli.model_config_from_flags(),
      simulation=federated.SimulationConfig(
          algorithm=FLAGS.algorithm,
          algorithm_config=algorithm_config,
          algorithm_params=algorithm_params,
          num_clients=FLAGS.num_clients,
          clients_per_round=FLAGS.clients_per_round,
          rounds=FLAGS.rounds,
          client_dropout=FLAGS.client_dropout,
          straggler_fraction=FLAGS.straggler_fraction,
          max_local_steps=FLAGS.max_local_steps,
          eval_every=FLAGS.eval_every,
          per_client_eval=FLAGS.per_client_eval,
          checkpoint_every=FLAGS.checkpoint_every,
          backend=FLAGS.backend,
          parallel_clients=FLAGS.parallel_clients,
          client_batching=FLAGS.client_batching,
          tff_workers=tuple(FLAGS.tff_workers),
          tff_data_dir=FLAGS.tff_data_dir,
          tff_clients_per_call=FLAGS.tff_clients_per_call,
          target_accuracy=FLAGS.target_accuracy,
          stop_at_target=FLAGS.stop_at_target,
          max_train_loss=FLAGS.max_train_loss,
          seed=FLAGS.seed,
          compression=federated.CompressionConfig(
              method=FLAGS.compression, topk_fraction=FLAGS.topk_fraction,
              quantize_bits=FLAGS.quantize_bits),
          aggregator=FLAGS.aggregator,
          aggregator_params=aggregator_params,
          attack=federated.AttackConfig(
              malicious_fraction=FLAGS.malicious_fraction,
              attack=FLAGS.attack, attack_scale=FLAGS.attack_scale,
              attack_noise_std=FLAGS.attack_noise_std),
          client_test_fraction=FLAGS.client_test_fraction,
          finetune_steps=FLAGS.finetune_steps,
          finetune_lr=FLAGS.finetune_lr),
      centralized_epochs=FLAGS.centralized_epochs,
      val_fraction=FLAGS.val_fraction,
      label_fraction=FLAGS.label_fraction,
      input_scaling=FLAGS.input_scaling,
      encoder_init=EncoderInit(FLAGS.init_encoder, FLAGS.freeze_encoder),
      objective=FLAGS.objective,
      ssl=SslConfig(
          method=(FLAGS.objective if FLAGS.objective != "supervised" else
                  "simclr"),
          projection_dim=FLAGS.ssl_projection_dim,
          hidden_dim=FLAGS.ssl_hidden_dim,
          projector_norm=FLAGS.ssl_projector_norm, seed=FLAGS.seed,
          # This binary names SimCLR's temperature --ssl_temperature (the
          # other methods' own hyper-parameters keep their defaults here).
          params=(SimClrParams(temperature=FLAGS.ssl_temperature)
                  if FLAGS.objective in ("simclr", "supervised") else
                  None)))
  summary = federated.run_federated(config, FLAGS.out_dir,
                                    cli.flag_values_dict(), FLAGS.resume)
  if "linear_probe_accuracy" in summary:
    print(f"{FLAGS.algorithm} + {FLAGS.objective}: linear probe "
          f"{summary['linear_probe_accuracy']:.4f}, kNN "
          f"{summary['final_test_accuracy']:.4f}  -> "
          f"{FLAGS.out_dir}/summary.json")
    return
  line = (f"{FLAGS.algorithm}: test accuracy "
          f"{summary['final_test_accuracy']:.4f} after "
          f"{summary['rounds_run']} rounds")
  if summary.get("rounds_to_target"):
    line += f" (target reached at round {summary['rounds_to_target']})"
  if "total_upload_megabytes" in summary:
    line += f", {summary['total_upload_megabytes']:.3f} MB uploaded"
  if "centralized_test_accuracy" in summary:
    line += f"; centralized {summary['centralized_test_accuracy']:.4f}"
  print(f"{line}  -> {FLAGS.out_dir}/summary.json")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
