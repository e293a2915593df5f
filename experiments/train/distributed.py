"""Multi-host start-up: join the JAX cluster, and keep per-process logs apart.

Every host runs the same ``python -m experiments.main`` command. ``jax.distributed.initialize``
runs when a launcher set the environment up: ``JAX_COORDINATOR_ADDRESS`` (host:port of process
0) with ``STRUX_NUM_PROCESSES`` and ``STRUX_PROCESS_ID``, or ``STRUX_DISTRIBUTED=1`` where JAX
detects the cluster itself (Slurm, Open MPI, Cloud TPU pods, Kubernetes). On CPU the processes
talk over gloo. Process 0 keeps the console (and writes the run files, see writers.py);
process ``i > 0`` sends its stdout and stderr to ``<workdir>/logs/process_<i>.txt``.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import jax

from experiments.errors import ConfigError

TIMEOUT_ENV = "STRUX_COORDINATOR_TIMEOUT"   # seconds to wait for the coordinator (default 300)


def requested() -> bool:
  return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or os.environ.get("STRUX_DISTRIBUTED") == "1"


def initialize() -> None:
  """Joins the cluster the environment describes (see the module docstring); a no-op without one.
  An unreachable coordinator is a ConfigError naming the address and the timeout (JAX itself
  would abort the process)."""
  if not requested() or jax.distributed.is_initialized():
    return
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  count, index = os.environ.get("STRUX_NUM_PROCESSES"), os.environ.get("STRUX_PROCESS_ID")
  timeout = int(os.environ.get(TIMEOUT_ENV, "300"))
  if address and index not in (None, "0"):
    _wait_for_coordinator(address, timeout, f"process {index} of {count}")
  if os.environ.get("JAX_PLATFORMS", "cpu").split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
        coordinator_address=address, num_processes=None if count is None else int(count),
        process_id=None if index is None else int(index), initialization_timeout=timeout)
  except ValueError as e:   # nothing set and no cluster (Slurm, TPU pod, ...) detected
    raise ConfigError(f"jax.distributed.initialize: {e} (JAX_COORDINATOR_ADDRESS={address}, "
                      f"STRUX_NUM_PROCESSES={count}, STRUX_PROCESS_ID={index})") from e


def _wait_for_coordinator(address: str, timeout: int, who: str) -> None:
  host, _, port = address.rpartition(":")
  deadline = time.time() + timeout
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
      return
    except OSError:
      if time.time() > deadline:
        raise ConfigError(
            f"could not reach the JAX coordinator at {address} within {TIMEOUT_ENV}={timeout}s "
            f"({who}): is process 0 running, and the address reachable from this host?") from None
      time.sleep(0.5)


def redirect_other_processes(workdir: str) -> None:
  """Process ``i > 0``: stdout and stderr (Python's and native code's) to a per-process file."""
  index = jax.process_index()
  if index == 0:
    return
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  log = open(os.path.join(workdir, "logs", f"process_{index}.txt"), "a", buffering=1)
  sys.stdout.flush()
  sys.stderr.flush()
  os.dup2(log.fileno(), 1)
  os.dup2(log.fileno(), 2)
  sys.stdout = sys.stderr = log
