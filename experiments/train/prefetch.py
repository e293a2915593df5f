"""Batches built ahead of the step in a background thread."""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Callable, Iterator


def prefetch(make_batch: Callable[[int], dict], steps: range, depth: int = 2
             ) -> Iterator[tuple[int, dict]]:
  """(step, make_batch(step)) for each step, the next ``depth`` batches built by a background
  thread while the device runs the current step (reading, augmenting and transferring overlap
  with compute). Close the generator to stop early; unstarted batches are dropped."""
  steps = iter(steps)
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:
    queue = collections.deque()
    try:
      while True:
        while len(queue) <= depth and (step := next(steps, None)) is not None:
          queue.append((step, pool.submit(make_batch, step)))
        if not queue:
          return
        step, batch = queue.popleft()
        yield step, batch.result()
    finally:
      pool.shutdown(cancel_futures=True)
