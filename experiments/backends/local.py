"""Runs as subprocesses of this machine, ``options.workers`` at a time (CPU: one core each)."""

from __future__ import annotations

import concurrent.futures
import os
import shutil

from experiments.backends.point import run_point


def execute(points, options):
  cores, workers = os.cpu_count() or 1, options.workers or 1
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = {}
    for slot, point in enumerate(points):
      command, env = list(point.command), None
      if workers > 1:   # pin each run to one core: two 1-core runs beat one 2-core run
        env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                             "false intra_op_parallelism_threads=1").strip()}
        if shutil.which("taskset"):
          command = ["taskset", "-c", str(slot % cores), *command]
      futures[pool.submit(run_point, command, point.workdir, None, env)] = point
    for future in concurrent.futures.as_completed(futures):
      yield futures[future], future.result()
