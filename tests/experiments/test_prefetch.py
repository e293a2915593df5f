"""The background batch prefetcher of the training loop."""

import threading

import pytest

from experiments.train import prefetch


def test_yields_every_step_in_order():
  assert list(prefetch.prefetch(lambda s: {"x": s * s}, range(3, 9))) == [
      (s, {"x": s * s}) for s in range(3, 9)]
  assert list(prefetch.prefetch(lambda s: s, range(0))) == []


def test_builds_ahead_while_a_step_runs_and_stops_when_closed():
  started, release, third_started = [], threading.Event(), threading.Event()

  def make_batch(step):
    started.append(step)
    if step == 3:
      third_started.set()
    if step >= 3:
      release.wait(10)
    return step

  batches = prefetch.prefetch(make_batch, range(1, 100), depth=2)
  assert next(batches) == (1, 1)
  assert third_started.wait(10)   # steps 2 and 3 were built while the caller held step 1
  release.set()
  batches.close()
  assert max(started) <= 4   # at most depth + 1 batches were ever queued; the rest never built


def test_errors_in_the_batch_builder_reach_the_caller():
  def make_batch(step):
    if step == 2:
      raise FileNotFoundError("shard 2 missing")
    return step

  batches = prefetch.prefetch(make_batch, range(1, 5))
  assert next(batches) == (1, 1)
  with pytest.raises(FileNotFoundError, match="shard 2 missing"):
    next(batches)
