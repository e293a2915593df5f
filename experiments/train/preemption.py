"""SIGTERM (a cluster's preemption notice) as a per-step question: save and stop at this step?

One process: SIGTERM sets a flag the loop reads after each step. Several processes (a JAX
cluster): JAX's preemption service owns SIGTERM; a notice to any process reaches all of them and
they agree on one step to stop at (``multihost_utils.reached_preemption_sync_point``), so the
whole cluster saves the same step and exits.
"""

import signal

import jax
from jax.experimental import multihost_utils


class Notice:
  """Context manager; ``notice(step)``: True at the step where the run must save and stop.
  Call it once after every step, on every process."""

  def __init__(self):
    self._set = False
    self._previous = None
    self._cluster = jax.process_count() > 1

  def __call__(self, step: int) -> bool:
    if self._cluster:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._set

  def _handle(self, signum, frame):
    del signum, frame
    self._set = True

  def __enter__(self):
    if self._cluster:   # a Python handler would replace the one JAX's preemption service installed
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:   # not the main thread: signals cannot be caught here
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
