"""Whether missing data files can be downloaded, decided before trying.

Offline, tensorflow-datasets retries a download for minutes (urllib3: 10
retries with exponential back-off, about 3.5 minutes) before it fails, and
importing TFF for EMNIST alone takes ~40 s. So a loader that misses its
files first asks `require_download`: with downloads off (`--nodownload`)
or the dataset's host unreachable in a couple of seconds, it fails at once
with one line naming the missing files, the folder searched and the fix;
otherwise the download runs as it always did.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from typing import Optional, Sequence, Tuple

from fedclf.errors import DataFileError

PROBE_TIMEOUT_S = 2.0


def _proxy_for(host: str) -> Optional[Tuple[str, int]]:
  """The (host, port) of the proxy an HTTPS download of `host` goes through
  (`https_proxy`/`all_proxy`), or None for a direct connection."""
  proxies = urllib.request.getproxies()
  proxy = proxies.get("https") or proxies.get("all")
  if not proxy or urllib.request.proxy_bypass(host):
    return None
  parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"//{proxy}")
  if not parsed.hostname:
    return None
  return parsed.hostname, parsed.port or 80


def host_reachable(host: str, port: int = 443,
                   timeout: float = PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to `host` (or the proxy that downloads would
  use) opens within `timeout` seconds.

  The connection runs in a thread because name resolution ignores the
  socket timeout: a resolver that never answers must not hold us longer.
  """
  address = _proxy_for(host) or (host, port)
  reached = []

  def connect() -> None:
    try:
      socket.create_connection(address, timeout=timeout).close()
      reached.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True,
                            name="fedclf-network-probe")
  thread.start()
  thread.join(timeout)
  return bool(reached)


def require_download(dataset: str, missing: Sequence[str], data_dir: str,
                     data_dir_origin: str, host: str, download: bool,
                     port: int = 443) -> None:
  """Returns when the `missing` files of `dataset` may be downloaded from
  `host`; otherwise raises a one-line DataFileError.

  Args:
    dataset: the dataset's name, first in the message.
    missing: what was looked for under `data_dir` and not found (relative
      paths, with their md5 where known).
    data_dir: the data directory searched.
    data_dir_origin: where `data_dir` came from (see
      `DataConfig.data_dir_origin`), so the user knows what to change.
    host: where the download would go (probed unless `download` is off).
    download: whether downloads are allowed at all.
    port: the port the download connects to (443 for https, 80 for http).
  """
  if download and host_reachable(host, port):
    return
  why = ("downloads are off: --nodownload" if not download else
         f"offline: {host} cannot be reached, so nothing was downloaded")
  allow = "" if download else ", or allow downloads (--download)"
  raise DataFileError(
      f"{dataset}: data files missing ({why}): {'; '.join(missing)}. fedclf "
      f"looks in {data_dir} ({data_dir_origin}): put the files there, or "
      f"point $FEDCLF_DATA_DIR or --data_dir at a folder that holds "
      f"them{allow}")
