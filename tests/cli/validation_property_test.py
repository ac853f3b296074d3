"""Property-based tests (hypothesis) of flag and config validation: any
invalid value is refused with a one-line user error (exit status 2 from a
binary), and any valid combination passes."""

import dataclasses
import math

from absl import flags
from hypothesis import example
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from fedclf import cli
from fedclf import plugin_config
from fedclf.errors import UserError
from fedclf.federated import algorithms
from fedclf.federated import config as fed_config
from fedclf.federated.backends import tff_context
from fedclf.registry import RegistryError

FAST = settings(max_examples=60, deadline=None, derandomize=True,
                database=None)
# For tests whose fixtures (capsys, a patched FLAGS) are reset by the test
# itself on every example.
WITH_FIXTURES = settings(FAST, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def unit(closed_top=False):
  """Floats in [0, 1) (or [0, 1])."""
  return st.floats(0.0, 1.0, exclude_max=not closed_top)


def not_unit(closed_top=False):
  return st.one_of(NON_FINITE, st.floats(max_value=0.0, exclude_max=True),
                   st.floats(min_value=1.0, exclude_min=closed_top,
                             allow_infinity=False))


def positive():
  return st.floats(1e-6, 1e6)


def not_positive():
  return st.one_of(NON_FINITE, st.floats(max_value=0.0,
                                         allow_infinity=False))


def non_negative():
  return st.floats(0.0, 1e6)


def negative_or_non_finite():
  return st.one_of(NON_FINITE, st.floats(max_value=0.0, exclude_max=True,
                                         allow_infinity=False))


server_configs = st.builds(
    fed_config.ServerOptimizerConfig,
    name=st.sampled_from(fed_config.SERVER_OPTIMIZERS),
    learning_rate=non_negative(), momentum=unit(), beta_1=unit(),
    beta_2=unit(), epsilon=non_negative(), initial_accumulator=non_negative())

algorithm_configs = st.builds(
    fed_config.AlgorithmConfig,
    client_optimizer=st.sampled_from(fed_config.CLIENT_OPTIMIZERS),
    client_lr=positive(), client_momentum=unit(),
    local_epochs=st.integers(1, 100), local_batch_size=st.integers(0, 1000),
    server=server_configs)

# Each algorithm's own hyper-parameters: valid values, and field -> values
# that must be refused.
algorithm_params = {
    "fedprox": st.builds(algorithms.FedProxParams, prox_mu=non_negative()),
    "dp_fedavg": st.builds(algorithms.DpFedAvgParams,
                           dp_noise_multiplier=non_negative(),
                           dp_clip=positive()),
    "reptile": st.builds(algorithms.ReptileParams,
                         personalization_steps=st.integers(0, 100),
                         personalization_lr=non_negative(),
                         reptile_inner_steps=st.integers(0, 100)),
    "fedrep": st.builds(algorithms.FedRepParams,
                        fedrep_head_epochs=st.integers(1, 100)),
    "ditto": st.builds(algorithms.DittoParams, ditto_lambda=non_negative()),
    "per_fedavg": st.builds(algorithms.PerFedAvgParams,
                            perfedavg_alpha=positive(),
                            perfedavg_beta=non_negative()),
}
BAD_PARAMS = {
    "prox_mu": negative_or_non_finite(),
    "dp_noise_multiplier": negative_or_non_finite(),
    "dp_clip": not_positive(),
    "personalization_steps": st.integers(max_value=-1),
    "personalization_lr": negative_or_non_finite(),
    "reptile_inner_steps": st.integers(max_value=-1),
    "fedrep_head_epochs": st.integers(max_value=0),
    "ditto_lambda": negative_or_non_finite(),
    "perfedavg_alpha": not_positive(),
    "perfedavg_beta": negative_or_non_finite(),
}


@st.composite
def simulation_configs(draw):
  num_clients = draw(st.integers(1, 10_000))
  backend = draw(st.sampled_from(fed_config.BACKENDS.names()))
  return fed_config.SimulationConfig(
      algorithm_config=draw(algorithm_configs),
      num_clients=num_clients,
      clients_per_round=draw(st.integers(1, num_clients)),
      rounds=draw(st.integers(1, 10_000)),
      client_dropout=draw(unit()), straggler_fraction=draw(unit()),
      max_local_steps=draw(st.integers(0, 1000)),
      eval_every=draw(st.integers(1, 100)),
      per_client_eval=draw(st.integers(0, 100)),
      checkpoint_every=draw(st.integers(0, 100)),
      backend=backend, parallel_clients=draw(st.integers(0, 64)),
      client_batching=draw(st.sampled_from(
          ("auto", "off") + (("on",) if backend == "local" else ()))),
      tff_workers=(("localhost:8000",) if backend == "tff" and
                   draw(st.booleans()) else ()),
      target_accuracy=draw(unit(closed_top=True)),
      client_test_fraction=draw(unit()),
      finetune_steps=draw(st.integers(0, 100)),
      finetune_lr=draw(non_negative()))


# field -> strategy of values that must be refused
BAD_SERVER = {
    "name": st.text(min_size=1, max_size=8).filter(
        lambda s: s not in fed_config.SERVER_OPTIMIZERS),
    "learning_rate": negative_or_non_finite(),
    "momentum": not_unit(), "beta_1": not_unit(), "beta_2": not_unit(),
    "epsilon": negative_or_non_finite(),
    "initial_accumulator": negative_or_non_finite(),
}
BAD_ALGORITHM = {
    "client_optimizer": st.text(min_size=1, max_size=8).filter(
        lambda s: s not in fed_config.CLIENT_OPTIMIZERS),
    "client_lr": not_positive(), "client_momentum": not_unit(),
    "local_epochs": st.integers(max_value=0),
    "local_batch_size": st.integers(max_value=-1),
}
BAD_SIMULATION = {
    "num_clients": st.integers(max_value=0),
    "clients_per_round": st.one_of(st.integers(max_value=0),
                                   st.integers(min_value=10_001)),
    "rounds": st.integers(max_value=0),
    "client_dropout": not_unit(), "straggler_fraction": not_unit(),
    "max_local_steps": st.integers(max_value=-1),
    "eval_every": st.integers(max_value=0),
    "per_client_eval": st.integers(max_value=-1),
    "checkpoint_every": st.integers(max_value=-1),
    "backend": st.text(max_size=8).filter(
        lambda s: s not in fed_config.BACKENDS),
    "parallel_clients": st.integers(max_value=-1),
    "client_batching": st.text(max_size=8).filter(
        lambda s: s not in fed_config.CLIENT_BATCHING),
    "target_accuracy": not_unit(closed_top=True),
    "client_test_fraction": not_unit(),
    "finetune_steps": st.integers(max_value=-1),
    "finetune_lr": negative_or_non_finite(),
}


def assert_refused(config):
  # A registry's unknown-name error is a user error too (binaries exit 2).
  with pytest.raises((UserError, RegistryError)) as e:
    config.validate()
  message = str(e.value)
  assert message and "\n" not in message, message


@FAST
@given(simulation_configs())
def test_valid_simulation_configs_pass(config):
  config.validate()


@FAST
@given(simulation_configs(), st.data())
def test_one_bad_simulation_value_is_refused(config, data):
  field = data.draw(st.sampled_from(sorted(BAD_SIMULATION)))
  value = data.draw(BAD_SIMULATION[field])
  if field == "clients_per_round":
    config = dataclasses.replace(config, num_clients=10_000)
  assert_refused(dataclasses.replace(config, **{field: value}))


@FAST
@given(algorithm_configs, st.data())
def test_one_bad_algorithm_value_is_refused(config, data):
  field = data.draw(st.sampled_from(sorted(BAD_ALGORITHM)))
  assert_refused(dataclasses.replace(
      config, **{field: data.draw(BAD_ALGORITHM[field])}))


@FAST
@given(st.sampled_from(sorted(algorithm_params)), st.data())
def test_algorithm_params_valid_pass_and_one_bad_value_is_refused(name,
                                                                   data):
  params = data.draw(algorithm_params[name])
  owner = f"algorithm {name}"
  plugin_config.validate_params(params, owner)
  field = data.draw(st.sampled_from(sorted(
      f.name for f in dataclasses.fields(params))))
  with pytest.raises(UserError) as e:
    plugin_config.validate_params(dataclasses.replace(
        params, **{field: data.draw(BAD_PARAMS[field])}), owner)
  message = str(e.value)
  assert message and "\n" not in message, message


@FAST
@given(server_configs, st.data())
def test_one_bad_server_value_is_refused(config, data):
  field = data.draw(st.sampled_from(sorted(BAD_SERVER)))
  assert_refused(dataclasses.replace(
      config, **{field: data.draw(BAD_SERVER[field])}))


def test_tff_workers_need_the_tff_backend():
  assert_refused(fed_config.SimulationConfig(
      backend="local", tff_workers=("localhost:8000",)))


# -- flags as a binary parses them -------------------------------------------

@pytest.fixture
def binary_flags(monkeypatch):
  """A private flag set shaped like a binary's, installed as absl's FLAGS
  for `cli`'s parser."""
  values = flags.FlagValues()
  flags.DEFINE_integer("num_clients", 100, "", lower_bound=1,
                       flag_values=values)
  flags.DEFINE_float("client_lr", 0.1, "", lower_bound=0.0,
                     flag_values=values)
  flags.DEFINE_enum("backend", "local", ["local", "tff"], "",
                    flag_values=values)
  flags.DEFINE_list("tff_workers", [], "", flag_values=values)
  monkeypatch.setattr(flags, "FLAGS", values)
  return values


FLAG_NAMES = ("num_clients", "client_lr", "backend")


def bad_flag_values():
  garbage = st.text(max_size=12).filter(lambda s: s.strip() != "")
  return st.one_of(
      st.tuples(st.just("num_clients"),
                st.one_of(st.integers(max_value=0).map(str), garbage.filter(
                    lambda s: not s.strip().lstrip("+-").isdigit()))),
      st.tuples(st.just("client_lr"),
                st.one_of(st.floats(max_value=-1e-9).map(repr),
                          st.sampled_from(["x", "1e", "--", "0.1.2"]))),
      st.tuples(st.just("backend"),
                garbage.filter(lambda s: s not in ("local", "tff"))))


@WITH_FIXTURES
@given(bad_flag_values())
@example(("backend", "lo\ncal"))  # e.g. from a flagfile with a stray break
@example(("num_clients", "1\n2"))
def test_bad_flag_values_exit_2_with_one_line(binary_flags, capsys, bad):
  name, value = bad
  binary_flags.unparse_flags()
  with pytest.raises(SystemExit) as e:
    cli._parse_flags(["fedclf-federated", f"--{name}={value}"])  # pylint: disable=protected-access
  assert e.value.code == cli.USER_ERROR_EXIT
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1, err
  assert err.startswith("fedclf-federated: error:") and name in err


@WITH_FIXTURES
@given(st.integers(1, 10**9), st.floats(0.0, 1e3),
       st.sampled_from(["local", "tff"]))
def test_valid_flag_values_parse(binary_flags, clients, lr, backend):
  binary_flags.unparse_flags()
  cli._parse_flags(["fedclf-federated", f"--num_clients={clients}",  # pylint: disable=protected-access
                    f"--client_lr={lr!r}", f"--backend={backend}"])
  assert binary_flags.num_clients == clients
  assert binary_flags.client_lr == lr and binary_flags.backend == backend


@WITH_FIXTURES
@given(st.text(min_size=1))
def test_user_error_message_is_one_line(capsys, message):
  with pytest.raises(SystemExit) as e:
    cli.exit_with_user_error(message)
  assert e.value.code == cli.USER_ERROR_EXIT
  err = capsys.readouterr().err
  assert err.startswith("error:") and err.count("\n") == 1, err


@FAST
@given(st.text(max_size=20))
def test_worker_addresses_are_host_port_or_one_line_error(text):
  try:
    addresses = tff_context._parse_workers(text)  # pylint: disable=protected-access
  except UserError as e:
    assert "\n" not in str(e) and "host:port" in str(e)
    return
  for address in addresses:
    host, _, port = address.rpartition(":")
    assert host and 0 < int(port) < 65536


@FAST
@given(st.lists(st.tuples(st.sampled_from(["localhost", "10.0.0.7", "h-1"]),
                          st.integers(1, 65535)), max_size=4))
def test_valid_worker_addresses_pass(pairs):
  given_addresses = [f"{h}:{p}" for h, p in pairs]
  assert tff_context._parse_workers(given_addresses) == given_addresses  # pylint: disable=protected-access
