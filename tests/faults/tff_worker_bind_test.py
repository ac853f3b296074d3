"""TFF workers listen on localhost unless told otherwise (the worker
protocol has no authentication): those started by `simulations.tff_worker`
and the one a `--backend=tff` run owns."""

import psutil
import pytest

from fedclf.errors import UserError
from fedclf.federated import bind_address
from fedclf.federated.backends import tff_workers
from tests.worker_launch import launched_worker

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def listening_addresses(pid):
  return [c.laddr for c in psutil.Process(pid).connections("inet")
          if c.status == psutil.CONN_LISTEN]


def test_owned_worker_serves_on_localhost_only():
  with tff_workers.start_local_worker() as worker:
    listening = listening_addresses(worker.pid)
  assert listening and all(a.ip in LOOPBACK for a in listening), listening
  assert any(a.port == worker.port for a in listening)


def test_worker_serves_on_localhost_only_by_default(tmp_path):
  # A fresh cache directory: the bind library is built for this test.
  with launched_worker({"FEDCLF_CACHE_DIR": str(tmp_path)},
                       timeout_s=300) as (proc, port, first_line):
    assert "127.0.0.1 only" in first_line
    # The launcher execs the worker: its pid is the worker's.
    listening = listening_addresses(proc.pid)
    assert listening and all(a.ip in LOOPBACK for a in listening), listening
    assert any(a.port == port for a in listening)


@pytest.mark.parametrize("host,expected", [
    ("localhost", "127.0.0.1"), (" 10.1.2.3 ", "10.1.2.3"),
    ("0.0.0.0", bind_address.ALL_INTERFACES)])
def test_host_values(host, expected):
  assert bind_address.parse_host(host) == expected


def test_every_interface_needs_no_library():
  assert bind_address.worker_environment(bind_address.ALL_INTERFACES) == {}


@pytest.mark.parametrize("host", ["example.com", "::1", "256.0.0.1", ""])
def test_bad_host_is_a_one_line_user_error(host):
  with pytest.raises(UserError, match="bad --host") as e:
    bind_address.parse_host(host)
  assert "\n" not in str(e.value)
