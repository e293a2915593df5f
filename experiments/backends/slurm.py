"""One submitit job per run on Slurm (an array job, ``--workers`` at a time), or on submitit's
local executor (``--slurm-executor local``: the same jobs as local processes, for tests).

Multi-node runs (``--nodes N``) start one task per node; each sets ``STRUX_DISTRIBUTED=1`` so
``experiments.main`` joins the JAX cluster Slurm describes (JAX reads ``SLURM_*``).
Submitit's files (pickles, per-job logs) go to ``<root>/.submitit``.
"""

from __future__ import annotations

import os
import shlex

import submitit

from experiments.backends.point import run_point


def _parameters(options) -> dict:
  r = options.resources
  params = dict(timeout_min=options.time, nodes=r.nodes, tasks_per_node=1, cpus_per_task=r.cpus,
                gpus_per_node=r.gpus)
  if options.partition:
    params["slurm_partition"] = options.partition
  if options.workers:
    params["slurm_array_parallelism"] = options.workers
  return params


def sbatch_line(point, options) -> str:
  """The sbatch command equivalent to submitting ``point``."""
  r = options.resources
  flags = [f"--job-name={point.name}", f"--time={options.time}", f"--nodes={r.nodes}",
           "--ntasks-per-node=1", f"--cpus-per-task={r.cpus}"]
  flags += [f"--partition={options.partition}"] if options.partition else []
  flags += [f"--gpus-per-node={r.gpus}"] if r.gpus else []
  flags += [f"--output={os.path.join(point.workdir, 'slurm-%j.out')}"]
  env = "STRUX_DISTRIBUTED=1 " if r.nodes > 1 else ""
  wrap = f"{env}srun {shlex.join(point.command)}" if r.nodes > 1 else shlex.join(point.command)
  return f"sbatch {' '.join(flags)} --wrap={shlex.quote(wrap)}"


def _run_task(command, workdir, cwd, env):
  """Each task of a job: rank 0 runs the point exactly once (see point.py); in a multi-node job
  the other ranks join its JAX cluster without the run's lock."""
  if submitit.JobEnvironment().global_rank == 0:
    return run_point(command, workdir, cwd, env)
  return run_point(command, workdir, cwd, env, lock=False)


def execute(points, options):
  points = list(points)
  executor = submitit.AutoExecutor(folder=os.path.join(options.root, ".submitit"),
                                   cluster=options.slurm_executor)
  params = _parameters(options)
  if options.slurm_executor == "local":   # the local executor knows no Slurm-only keys
    params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    params.pop("cpus_per_task")
  executor.update_parameters(**params)
  env = {"STRUX_DISTRIBUTED": "1"} if options.resources.nodes > 1 else {}
  with executor.batch():
    jobs = [executor.submit(_run_task, list(p.command), p.workdir, os.getcwd(), env)
            for p in points]
  for job, point in zip(jobs, points):
    yield point, job.result()
