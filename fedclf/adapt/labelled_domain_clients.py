"""Federated learning across domains: some clients hold MNIST, others USPS.

Two registered pieces make this an ordinary `Simulation`:

- the mixture datasets `domains:a+b[+c]` (`fedclf.adapt.domains`): the
  domains aligned to one shape and concatenated, each training example's
  natural client id being its domain index;
- the `per_domain` partitioner: every client holds examples of one domain
  (clients dealt to domains in turn, each domain split IID among its
  clients), or with fewer clients than domains, whole domains.

So `simulations.federated --dataset=domains:mnist+usps --partition=per_domain`
runs too; `run_federated_adaptation` adds what that binary lacks: the
accuracy of the final global model on each domain's own test set.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from absl import logging
import numpy as np

from fedclf.adapt.domains import DEFAULT_IMAGE_SIZE
from fedclf.adapt.domains import DomainLimits
from fedclf.adapt.domains import DomainOptions
from fedclf.adapt.domains import load_domains
from fedclf.adapt.domains import MIXABLE_DOMAINS
from fedclf.adapt.domains import mixture_domains
from fedclf.adapt.domains import mixture_name
from fedclf.data import DataConfig
from fedclf.errors import UserError
from fedclf.federated import FederatedRunConfig
from fedclf.federated import Simulation
from fedclf.federated import SimulationConfig
from fedclf.federated.evaluation import load_state
from fedclf.models import ModelConfig
from fedclf.partition import PartitionConfig
from fedclf.registry import PARTITIONERS
from fedclf.results.trained_run import write_final_model
from fedclf.train.loop import evaluate_classifier


@PARTITIONERS.register("per_domain")
def per_domain(labels: np.ndarray, config: PartitionConfig,
              rng: np.random.Generator,
              client_ids: Optional[np.ndarray]) -> List[np.ndarray]:
  """Clients that each hold a single domain (the dataset's client ids).

  With at least as many clients as domains, client c holds domain
  c mod D (in a seeded order of the domains), so the domains get equal
  client counts (+-1) whatever their sizes, and each domain's examples are
  split IID (seeded) among its clients. With fewer clients, each client
  holds whole domains, dealt round-robin in a seeded order (like
  `natural`).
  """
  del labels  # Unused: the split follows the domains alone.
  if client_ids is None:
    raise UserError("the per_domain partition needs a dataset with a domain "
                    "per example, e.g. domains:mnist+usps")
  domains, domain_of = np.unique(client_ids, return_inverse=True)
  domain_of = domain_of.reshape(-1)
  num_domains = len(domains)
  m = config.num_clients
  order = rng.permutation(num_domains)
  if m < num_domains:
    client_of_domain = np.empty(num_domains, np.int64)
    client_of_domain[order] = np.arange(num_domains) % m
    assignment = client_of_domain[domain_of]
  else:
    assignment = np.empty(len(domain_of), np.int64)
    for rank, domain in enumerate(order):
      clients = np.arange(rank, m, num_domains)
      members = rng.permutation(np.flatnonzero(domain_of == domain))
      if len(members) < len(clients):
        raise UserError(
            f"the per_domain partition cannot give {len(clients)} clients "
            f"examples of domain {domains[domain]!r}, which has "
            f"{len(members)}; use fewer clients")
      for client, part in zip(clients,
                              np.array_split(members, len(clients))):
        assignment[part] = client
  return [np.flatnonzero(assignment == c) for c in range(m)]


def federated_domain_config(domains: Sequence[str],
                            simulation: SimulationConfig,
                            model_name: str = "cnn",
                            model: ModelConfig = ModelConfig(),
                            image_size: int = DEFAULT_IMAGE_SIZE,
                            limits: DomainLimits = DomainLimits(),
                            data_dir: str = "",
                            download: bool = True,
                            seed: int = 0) -> FederatedRunConfig:
  """A `FederatedRunConfig` whose clients each hold one of `domains`.

  Args:
    domains: two or more of `MIXABLE_DOMAINS`.
    simulation: algorithm, clients, rounds, ... (its `num_clients` is the
      partition's).
    model_name, model: the zoo model.
    image_size: the common square size (colour when any domain is).
    limits: seeded slices of the mixture's train and test sets (0 = all).
    data_dir, download: as `DataConfig`.
    seed: the slice and partition seed.
  """
  unknown = sorted(set(domains) - set(MIXABLE_DOMAINS))
  if unknown or len(set(domains)) < 2:
    raise UserError(f"federated domain adaptation mixes two or more "
                    f"distinct domains of: {', '.join(MIXABLE_DOMAINS)}; "
                    f"got {', '.join(domains)}")
  return FederatedRunConfig(
      data=DataConfig(name=mixture_name(domains), data_dir=data_dir,
                      image_size=image_size, train_limit=limits.train,
                      test_limit=limits.test, seed=seed, download=download),
      partitioner="per_domain",
      partition=PartitionConfig(num_clients=simulation.num_clients, seed=seed),
      model_name=model_name,
      model=model,
      simulation=simulation)


def run_federated_adaptation(config: FederatedRunConfig, out_dir: str,
                             run_config: Dict,
                             resume: bool = False) -> Dict:
  """Runs the federated simulation, then scores the global model per domain.

  The summary is the simulation's (`final_test_accuracy` on the mixed
  test set, ...) plus `domain_accuracy` and `domain_macro_f1` (domain ->
  value, on each domain's own test set, `test_limit` applied per domain)
  and `domain_clients` (domain -> number of clients holding it).
  `target_accuracy` keeps the simulation's meaning (the rounds-to-target
  threshold), so per-domain scores never shadow it.
  """
  domains = mixture_domains(config.data.name)
  if config.partitioner != "per_domain":
    logging.warning("partitioner %s may mix domains on one client",
                    config.partitioner)
  simulation = Simulation(config, out_dir, run_config, resume)
  try:
    summary = simulation.run()
  finally:
    simulation.close()
  model = simulation.eval_model
  state = simulation.final_state
  load_state(model, state)
  test_sets = load_domains(
      domains, config.data.image_size or DEFAULT_IMAGE_SIZE, 0,
      DomainOptions(data_dir=config.data.data_dir,
                    download=config.data.download, seed=config.data.seed,
                    limits=DomainLimits(test=config.data.test_limit)))
  accuracy, macro_f1 = {}, {}
  for name in domains:
    ds = test_sets[name]
    report = evaluate_classifier(model, (ds.x_test, ds.y_test),
                                 simulation.data.normalization, ds.num_classes,
                                 batch_size=config.eval_batch_size)
    accuracy[name] = report["accuracy"]
    macro_f1[name] = report["macro_f1"]
    logging.info("global model on %s: test accuracy %.4f", name,
                 report["accuracy"])
  domain_ids = simulation.ds.train_client_ids
  summary.update({
      "domains": list(domains),
      "domain_accuracy": accuracy,
      "domain_macro_f1": macro_f1,
      "domain_clients": {
          name: int(sum(1 for c in simulation.clients
                        if np.any(domain_ids[c] == i)))
          for i, name in enumerate(domains)},
  })
  write_final_model(simulation.recorder, model, "federated_domain_mixture",
                    summary, simulation.data.normalization)
  simulation.recorder.log_metrics(
      summary["rounds_run"],
      {f"{name}_test_accuracy": value for name, value in accuracy.items()},
      "round")
  return summary

