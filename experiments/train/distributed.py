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
import sys

import jax

from experiments.errors import ConfigError

TIMEOUT_ENV = "STRUX_COORDINATOR_TIMEOUT"   # seconds to wait for the coordinator (default 300)


def requested() -> bool:
  return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or os.environ.get("STRUX_DISTRIBUTED") == "1"


def initialize() -> None:
  """Joins the cluster the environment describes (see the module docstring); a no-op without one.
  An unreachable coordinator is a ConfigError naming the address and the timeout."""
  if not requested() or jax.distributed.is_initialized():
    return
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  count, index = os.environ.get("STRUX_NUM_PROCESSES"), os.environ.get("STRUX_PROCESS_ID")
  timeout = int(os.environ.get(TIMEOUT_ENV, "300"))
  if os.environ.get("JAX_PLATFORMS", "cpu").split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
        coordinator_address=address, num_processes=None if count is None else int(count),
        process_id=None if index is None else int(index), initialization_timeout=timeout)
  except Exception as e:   # jaxlib raises XlaRuntimeError / ValueError with a long status text
    if "DEADLINE_EXCEEDED" in str(e) or "timed out" in str(e).lower() or "Barrier" in str(e):
      raise ConfigError(
          f"could not reach the JAX coordinator at {address or '(auto-detected)'} within "
          f"{TIMEOUT_ENV}={timeout}s (process {index} of {count}): is process 0 running and the "
          "address reachable from this host?") from e
    raise ConfigError(f"jax.distributed.initialize failed (JAX_COORDINATOR_ADDRESS={address}, "
                      f"STRUX_NUM_PROCESSES={count}, STRUX_PROCESS_ID={index}): "
                      f"{str(e).splitlines()[0]}") from e


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
