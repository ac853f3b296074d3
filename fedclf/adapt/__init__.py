"""Domain adaptation: how a classifier trained on one domain does on
another, and how adaptation closes the gap.

    from fedclf.adapt import AdaptRunConfig, run_adaptation
    summary = run_adaptation(AdaptRunConfig(source="mnist", target="usps",
                                            method="dann"), "runs/x", {})

Domains (`DOMAINS`): mnist, usps, mnist_m (generated, see mnist_m.py),
mnist_corrupted[/corruption] (tensorflow-datasets, when prepared). Methods
register in `fedclf.registry.ADAPTATION_METHODS` (one module each under
`fedclf/adapt/methods/`): source_only, target_oracle, dann, cdan (CDAN+E),
mdd, finetune (the adversarial three share
`fedclf.adapt.adversarial_training`'s loop), fixmatch (self-training on
weak/strong views, `fedclf.adapt.consistency`). Add one with

    from fedclf.adapt import AdaptationResult, AdaptationTask
    from fedclf.registry import ADAPTATION_METHODS

    @ADAPTATION_METHODS.register("my_method")
    def my_method(task: AdaptationTask) -> AdaptationResult: ...

A method's own hyper-parameters are a params dataclass registered with it
(`params=DannParams`, `FinetuneParams`), read from `AdaptConfig.params`
(`task.method_params(name)`); the binary turns their fields into flags.

Input standardization (`AdaptConfig.normalization`): per_domain (default;
each domain with its own training statistics), pooled, or source.

Federated runs across domains: `run_federated_uda`
(`fedclf.adapt.unlabelled_target_clients`) runs source_only, dann (f-DANN),
self_training (pseudo-labels) and target_oracle over labelled source
clients and unlabelled target clients;
`run_federated_adaptation` (`fedclf.adapt.labelled_domain_clients`) runs any registered
federated algorithm on clients that all hold labels, through the
`domains:a+b` datasets and the `per_domain` partitioner.
"""

from fedclf.adapt import methods  # noqa: F401  (registers the methods)
from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.task import AdaptConfig
from fedclf.adapt.task import few_shot_indices
from fedclf.adapt.methods.cdan import CdanParams
from fedclf.adapt.methods.dann import DannParams
from fedclf.adapt.methods.mdd import MddParams
from fedclf.adapt.methods.finetune import FinetuneParams
from fedclf.adapt.methods.fixmatch import FixMatchParams
from fedclf.adapt.domains import align
from fedclf.adapt.domains import DOMAINS
from fedclf.adapt.domains import DomainLimits
from fedclf.adapt.domains import DomainOptions
from fedclf.adapt.domains import DomainPair
from fedclf.adapt.domains import DomainSpec
from fedclf.adapt.domains import load_domain
from fedclf.adapt.domains import load_domain_pair
from fedclf.adapt.domains import load_domains
from fedclf.adapt.domains import mixture_name
from fedclf.adapt.labelled_domain_clients import per_domain
from fedclf.adapt.labelled_domain_clients import federated_domain_config
from fedclf.adapt.labelled_domain_clients import run_federated_adaptation
from fedclf.adapt.unlabelled_target_clients import FEDERATED_METHODS
from fedclf.adapt.unlabelled_target_clients import FederatedAdaptConfig
from fedclf.adapt.unlabelled_target_clients import run_federated_uda
from fedclf.adapt.grl import dann_lambda
from fedclf.adapt.grl import gradient_reversal
from fedclf.adapt.mnist_m import make_mnist_m
from fedclf.adapt.centralized_run import AdaptRunConfig
from fedclf.adapt.centralized_run import evaluate_pair
from fedclf.adapt.centralized_run import run_adaptation
from fedclf.adapt.centralized_run import run_adaptation_seeds
