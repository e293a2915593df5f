"""Runs one sweep point on whatever host a backend picked, exactly once.

A run holds ``<workdir>/run.lock`` (an flock, shared with the ``experiments.main`` child so it
lasts while either lives). A second attempt of the same run (a restarted sweep whose killed
predecessor left the run going, or a scheduler's retry) waits for the lock, then finds the run
finished and returns without running it, or resumes it from its checkpoint.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

import runfiles
from experiments.backends import Outcome


def run_point(command: list[str], workdir: str, cwd: str | None = None,
              env: dict[str, str] | None = None, lock: bool = True) -> Outcome:
  """``command`` with its output appended to ``workdir/log.txt``; ``env`` is added to this
  process's environment (a scheduler's, e.g. CUDA_VISIBLE_DEVICES, stays). ``lock=False``: a
  secondary host of a multi-host run, which joins the run that host 0 holds the lock for."""
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  with open(os.path.join(workdir, "run.lock" if lock else os.devnull), "a") as held:
    if lock:
      fcntl.flock(held, fcntl.LOCK_EX)   # waits for an earlier attempt still running
    if runfiles.is_finished(workdir):
      return Outcome(0, time.time() - t0, ran=False)
    with open(os.path.join(workdir, "log.txt"), "a") as log:
      rc = subprocess.call(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                           env=dict(os.environ, **(env or {})), pass_fds=(held.fileno(),))
  return Outcome(rc, time.time() - t0, ran=True)
