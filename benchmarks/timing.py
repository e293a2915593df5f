"""Round-robin timing of benchmark rows: one owner for how every benchmark script times.

Each row's builder returns the functions to time (``Timing``); ``time_rows`` warms them all up,
then times them in turn for a number of rounds, so load drifts on a shared machine hit every row
alike, and reports per-row seconds (``Row``).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import statistics
import sys
import time
from typing import Callable, NamedTuple

import jax

from experiments import host_allocator


@dataclasses.dataclass
class Row:
  """One row's seconds per repeat of each timed function, and its forward FLOPs."""

  part: str
  name: str
  flops: int            # forward FLOPs of one step's batch
  step_s: list[float]   # full step (fwd + bwd [+ update]) seconds per repeat
  fwd_s: list[float]    # forward-only seconds per repeat
  grad_s: list[float] = dataclasses.field(default_factory=list)   # fwd + bwd, no update

  def fwd_bwd_s(self) -> list[float]:
    """Forward + backward without the optimizer update (a layer row's step is just that)."""
    return self.grad_s or self.step_s

  def gflops(self) -> float:
    return 3 * self.flops / statistics.median(self.step_s) / 1e9


class Timing(NamedTuple):
  """What a row's builder returns: the functions to time, each run to completion, and the forward
  FLOPs of one call; ``grads`` (forward + backward without the update) where the step has more."""
  step: Callable[[], object]
  forward: Callable[[], object]
  flops: int
  grads: Callable[[], object] | None = None


def time_rows(builders: list[tuple[str, str, callable]], repeats: int,
              profile_dir: str | None = None) -> list[Row]:
  """Builds every row (each builder returns a ``Timing`` or its first fields as a tuple), warms
  each up, then times them round-robin (``repeats`` rounds), so machine load drifts hit all rows
  alike; with ``profile_dir``, then traces 3 more steps of each row into
  ``profile_dir/<part>-<row>`` (``python -m benchmarks.profile_summary`` reads them)."""
  built = []
  for part, name, build in builders:
    step, forward, flops, grads = Timing(*build())
    row = Row(part, name, flops, [], [])
    timed = [(step, row.step_s), (forward, row.fwd_s)] + ([(grads, row.grad_s)] if grads else [])
    jax.block_until_ready([fn() for fn, _ in timed])    # compile + warm-up
    built.append((row, step, timed))
    print(f"  built {part}: {name}", file=sys.stderr, flush=True)
  for _ in range(repeats):
    for _, _, timed in built:
      for fn, times in timed:
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
  for row, step, _ in built if profile_dir else ():
    slug = re.sub(r"\W+", "_", f"{row.part}-{row.name}")
    with jax.profiler.trace(os.path.join(profile_dir, slug)):
      for _ in range(3):
        jax.block_until_ready(step())
  return [row for row, _, _ in built]


def forward_backward(fn: Callable, n_diff: int | None = None) -> Callable:
  """jit of (ct, *args) -> (fn(*args), gradients of <fn(*args), ct> w.r.t. its first ``n_diff``
  args (all by default)): a forward and a backward for a fixed output cotangent. y is returned,
  so XLA keeps the forward; the gradient of sum(y) lets it drop a linear map's last product."""
  def step(ct, *args):
    k = len(args) if n_diff is None else n_diff
    y, pullback = jax.vjp(lambda *diff: fn(*diff, *args[k:]), *args[:k])
    return y, pullback(ct)
  return jax.jit(step)


def ms_range(times: list[float]) -> str:
  """Median (min-max) milliseconds."""
  return f"{1e3 * statistics.median(times):.1f} ({1e3 * min(times):.1f}-{1e3 * max(times):.1f})"


def cpu_label() -> str:
  """The host CPU's model, its widest vector/matrix ISA and its count, for a table's header: ratios
  to dense differ across CPU models (an AVX-512 EPYC vs an AMX Xeon: dense's GEMMs gained more than
  the structured families' small ones, results/train_step_cpu_xeon.md)."""
  try:
    info = dict(line.split(":", 1) for line in open("/proc/cpuinfo") if ":" in line)
  except OSError:
    info = {}
  info = {key.strip(): value.strip() for key, value in info.items()}
  flags = set(info.get("flags", "").split())
  isa = next((name for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
              if flag in flags), None)
  model = info.get("model name") or platform.processor() or platform.machine()
  return f"{model}{f' ({isa})' if isa else ''}, {os.cpu_count()} CPUs"


def malloc_label() -> str:
  """The host allocator the process runs with, for a table's header."""
  if not host_allocator.preloaded():
    return "system"
  return f"tcmalloc, heap limit {os.environ.get(host_allocator.HEAP_LIMIT, 'none')} MB"
