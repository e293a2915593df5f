"""A ``jax.profiler`` trace of the steps ``profile_steps`` names, under ``<workdir>/profile``
(TensorBoard's profile plugin or Perfetto read it)."""

from __future__ import annotations

import os

import jax


class StepTrace:
  """Context manager: ``before(step)`` starts the trace at the first step in ``steps``
  (first, last), ``after(step, outputs)`` waits for the last one's outputs and stops it; leaving
  the context stops a trace still running (an error or preemption inside the range)."""

  def __init__(self, steps: tuple[int, int] | None, workdir: str):
    self.steps, self.directory = steps, os.path.join(workdir, "profile")
    self._tracing = False

  def before(self, step: int) -> None:
    if self.steps and not self._tracing and self.steps[0] <= step <= self.steps[1]:
      jax.profiler.start_trace(self.directory)
      self._tracing = True

  def after(self, step: int, outputs) -> None:
    if self._tracing and step >= self.steps[1]:
      jax.block_until_ready(outputs)   # the trace holds the last step's device work
      self._stop()

  def _stop(self) -> None:
    jax.profiler.stop_trace()
    self._tracing = False
    print(f"profile of steps {self.steps[0]}-{self.steps[1]} written to {self.directory}", flush=True)

  def __enter__(self) -> StepTrace:
    return self

  def __exit__(self, *exc) -> None:
    if self._tracing:
      self._stop()
