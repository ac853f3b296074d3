"""Makes TFF's C++ worker listen on one address instead of every interface.

TFF's `worker_binary` takes a port but no bind address: it always serves on
`[::]` (every interface), and its protocol has no authentication, so anyone
who can reach the port can run TensorFlow code there. `python -m
simulations.tff_worker` therefore starts it with a small preloaded library
(LD_PRELOAD) whose `bind()` replaces the wildcard address by the one asked
for (127.0.0.1 by default): an IPv4 socket binds that address, and the
dual-stack IPv6 socket gRPC prefers binds its IPv4-mapped form, so the
worker accepts connections to that address only.

The library is compiled on first use with the system C compiler (`cc`)
into ~/.cache/fedclf (or $FEDCLF_CACHE_DIR) and reused; without a compiler
the worker cannot be restricted, and `BindAddressError` says so.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict

from fedclf.errors import UserError

# Every interface: the worker binary's own behaviour, no library needed.
ALL_INTERFACES = "0.0.0.0"
_HOST_VARIABLE = "FEDCLF_TFF_BIND_IPV4"

_SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* bind() that moves wildcard binds to the IPv4 address in
   FEDCLF_TFF_BIND_IPV4; every other bind is left alone. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real_bind)(int, const struct sockaddr *, socklen_t);
  const char *host = getenv("FEDCLF_TFF_BIND_IPV4");
  if (!real_bind) {
    real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(
        RTLD_NEXT, "bind");
  }
  if (addr != NULL && host != NULL) {
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
      struct sockaddr_in a;
      memcpy(&a, addr, sizeof a);
      if (a.sin_addr.s_addr == htonl(INADDR_ANY) &&
          inet_pton(AF_INET, host, &a.sin_addr) == 1) {
        return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
      }
    } else if (addr->sa_family == AF_INET6 &&
               len >= sizeof(struct sockaddr_in6)) {
      struct sockaddr_in6 a;
      char mapped[64];
      memcpy(&a, addr, sizeof a);
      snprintf(mapped, sizeof mapped, "::ffff:%s", host);
      if (IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr) &&
          inet_pton(AF_INET6, mapped, &a.sin6_addr) == 1) {
        return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
      }
    }
  }
  return real_bind(fd, addr, len);
}
"""


class BindAddressError(UserError):
  """The worker cannot be restricted to the requested address here."""


def parse_host(host: str) -> str:
  """The IPv4 address to serve on: 'localhost', or a literal address."""
  host = host.strip()
  if host == "localhost":
    return "127.0.0.1"
  try:
    return str(ipaddress.IPv4Address(host))
  except ValueError:
    raise UserError(f"bad --host {host!r}: use localhost, an IPv4 address "
                    f"of this machine, or {ALL_INTERFACES} for every "
                    f"interface") from None


def _cache_dir() -> str:
  return os.environ.get("FEDCLF_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "fedclf")


def shim_library() -> str:
  """The path of the compiled bind() library, building it if needed."""
  if not sys.platform.startswith("linux"):
    raise BindAddressError("serving TFF workers on one address needs Linux "
                           f"(LD_PRELOAD); pass --host={ALL_INTERFACES} to "
                           f"serve on every interface")
  digest = hashlib.sha256(_SHIM_SOURCE.encode()).hexdigest()[:12]
  path = os.path.join(_cache_dir(), f"tff_bind_address_{digest}.so")
  if os.path.exists(path):
    return path
  compiler = shutil.which(os.environ.get("CC", "cc"))
  if compiler is None:
    raise BindAddressError(
        "cannot restrict the TFF worker to one address: building its bind "
        "library needs a C compiler (cc), none found; install one, or pass "
        f"--host={ALL_INTERFACES} to serve on every interface")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as work:
    source = os.path.join(work, "bind.c")
    with open(source, "w") as f:
      f.write(_SHIM_SOURCE)
    built = os.path.join(work, "bind.so")
    proc = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", built,
                           source, "-ldl"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
      last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
      raise BindAddressError(
          f"cannot build the TFF worker's bind library with {compiler}: "
          f"{last}; pass --host={ALL_INTERFACES} to serve on every interface")
    os.replace(built, path)  # atomic: concurrent starts agree on one file
  return path


def worker_environment(host: str) -> Dict[str, str]:
  """Environment variables that make a worker_binary started with them
  listen on `host` (an address from `parse_host`) only."""
  if host == ALL_INTERFACES:
    return {}
  preload = os.environ.get("LD_PRELOAD", "")
  return {"LD_PRELOAD": " ".join(filter(None, [shim_library(), preload])),
          _HOST_VARIABLE: host}
