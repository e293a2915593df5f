"""One Ray task per run, with the run's resource request (CPUs, GPUs, TPU chips).

``ray.init()`` starts a local cluster, or joins ``--ray-address`` (e.g. ``auto`` on a node of a
running cluster). Runs see the repository at the driver's working directory, so on a
multi-node cluster the repository and ``--root`` must be on a shared filesystem. A worker that
dies is retried (``max_retries``): the retry resumes the run from its checkpoint.
"""

from __future__ import annotations

import os

import ray

from experiments.backends.point import run_point

FORWARDED_ENV = ("PYTHONPATH", "WANDB_MODE", "JAX_PLATFORMS")


def execute(points, options):
  if not ray.is_initialized():
    ray.init(address=options.ray_address, num_cpus=options.ray_num_cpus,
             log_to_driver=False, include_dashboard=False)
  resources = options.resources
  remote = ray.remote(run_point).options(
      num_cpus=resources.cpus, num_gpus=resources.gpus,
      resources={"TPU": resources.tpus} if resources.tpus else None, max_retries=2)
  env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
  pending = {remote.remote(list(p.command), p.workdir, os.getcwd(), env): p for p in points}
  while pending:
    done, _ = ray.wait(list(pending), num_returns=1)
    point = pending.pop(done[0])
    yield point, ray.get(done[0])
