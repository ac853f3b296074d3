r"""Runs one TFF C++ worker in the foreground, for `--tff_workers` runs.

  python -m simulations.tff_worker --port=8000                 # this machine only
  python -m simulations.tff_worker --port=8000 --host=10.0.0.7 # one interface
  python -m simulations.tff_worker --port=8000 --host=0.0.0.0  # every interface

On each machine that should take part, start one of these, then point the
simulation at them (`--backend=tff --tff_workers=hostA:8000,hostB:8000`).
The process *becomes* TFF's `worker_binary` (exec), so Ctrl-C, `kill` and
job control act on the worker itself and nothing is left behind.

The worker protocol has no authentication: whoever reaches the port can
run TensorFlow code on this machine. So the worker listens on localhost
unless told otherwise (`--host`); the binary itself cannot be told, so a
small preloaded bind() library does it (fedclf/federated/bind_address.py).
Open it to a network only behind a firewall, to trusted machines.

The worker reads the run's training arrays from files the driver wrote
(`--tff_data_dir` of the run; fedclf/federated/backends/tff_data.py), at the
same path on this machine. To check them before serving:

  python -m simulations.tff_worker --port=8000 --data_dir=/srv/fedclf \
      --expect_data=CHECKSUM      # the checksum in the files' names

refuses (one line, exit status 2) files that are missing or whose arrays do
not hash to CHECKSUM. The driver checks every worker's arrays again at the
start of each run either way.
"""

import os
import signal
import socket
import sys

from absl import app
from absl import flags
import portpicker

from fedclf import cli

flags.DEFINE_integer("port", None, "Port to serve on (1-65535).",
                     lower_bound=1, upper_bound=65535)
flags.DEFINE_string("host", "localhost",
                    "Address to serve on: localhost (default: this machine "
                    "only), an IPv4 address of one interface, or 0.0.0.0 "
                    "for every interface. The protocol has no "
                    "authentication; open it only to trusted networks.")
flags.DEFINE_integer("max_concurrent_computation_calls", 0,
                     "Most parallel calls of one computation (e.g. clients "
                     "of a federated_map) the worker runs; 0: one per CPU "
                     "core this worker may use (taskset's cores where "
                     "pinned); negative: no limit.")
flags.DEFINE_string("data_dir", "",
                    "Folder holding a run's training arrays (the run's "
                    "--tff_data_dir); with --expect_data they are checked "
                    "before the worker serves.")
flags.DEFINE_string("expect_data", "",
                    "Checksum of the training arrays the driver will use "
                    "(the CHECKSUM in fedclf_tffdata_CHECKSUM.*); refuse to "
                    "start unless --data_dir holds them.")
flags.mark_flag_as_required("port")

FLAGS = flags.FLAGS


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"tff_worker: error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(cli.USER_ERROR_EXIT)


def _check_data(data_dir: str, expect_data: str) -> None:
  """Exits with one line unless `data_dir` holds the arrays `expect_data`
  names."""
  # pylint: disable=g-import-not-at-top
  from fedclf.errors import UserError
  from fedclf.federated.backends import tff_data
  # pylint: enable=g-import-not-at-top
  if bool(data_dir) != bool(expect_data):
    cli.exit_with_user_error("--data_dir and --expect_data go together")
  if not expect_data:
    return
  try:
    data = tff_data.check_worker_data(data_dir, expect_data)
  except UserError as e:
    cli.exit_with_user_error(str(e))
  print(f"tff_worker: training data {expect_data} in {data_dir} checked "
        f"({data.x_shape[0]} examples)", flush=True)


def main(argv):
  if len(argv) > 1:
    cli.exit_with_user_error(f"unexpected arguments: {' '.join(argv[1:])}")
  port = FLAGS.port
  # The worker itself only logs a gRPC error and exits 0 on a taken port.
  if not portpicker.is_port_free(port):
    cli.exit_with_user_error(f"port {port} is already in use")
  # Imported only now: fedclf.federated loads TensorFlow (seconds), which a
  # bad flag or a taken port should not have to wait for.
  cli.import_tensorflow()  # Without its start-up noise (see fedclf.cli).
  _check_data(FLAGS.data_dir, FLAGS.expect_data)
  # pylint: disable=g-import-not-at-top
  from fedclf.errors import UserError
  from fedclf.federated import bind_address
  from fedclf.federated.backends import tff_workers
  # pylint: enable=g-import-not-at-top
  try:
    host = bind_address.parse_host(FLAGS.host)
    env = dict(os.environ, **bind_address.worker_environment(host))
    binary = tff_workers.worker_binary_path()
  except (UserError, tff_workers.WorkerError) as e:
    cli.exit_with_user_error(str(e))
  where = (f"every interface; connect with --tff_workers="
           f"{socket.gethostname()}:{port}"
           if host == bind_address.ALL_INTERFACES else
           f"{host} only; connect with --tff_workers="
           f"{'localhost' if host == '127.0.0.1' else host}:{port}")
  print(f"tff_worker: serving TFF executor on port {port} of {where}",
        flush=True)
  sys.stderr.flush()
  # A shell that starts us in the background ignores SIGINT, and exec keeps
  # ignored signals ignored; the worker should stop on Ctrl-C / kill -INT.
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  calls = tff_workers.concurrent_calls(FLAGS.max_concurrent_computation_calls)
  os.execve(binary, [binary, f"--port={port}",
                     f"--max_concurrent_computation_calls={calls}"], env)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
