"""Where a BTT layer's time goes: each stage of its rank-1, 2-core forward timed alone.

  PYTHONPATH=. python benchmarks/btt_stages.py [--dims 1024 4096] [--tokens 4096] [--repeats 7]

The stages of ``BTT._matmul`` in its tokens-middle layout (d = m^2, N tokens), each jitted on its
own input: x [N, m, m] -> [m, N, m]; bmm [m, N, m] x [m, m, m]; the transpose between the cores
[m, N, m] -> [m, N, m] (features swapped across the token axis); the second bmm; y back to
[N, d]. Next to them: the dense [N, d] x [d, d] matmul and a plain copy of x (x + 1) at the same
size, in the same round-robin. Prints FLOPs, bytes read + written, median (min) ms, GFLOP/s and
GB/s per stage: a stage that moves bytes at the copy's rate is memory-bound, and the sum of the
stages bounds how close BTT's FLOP rate can come to dense's on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from experiments import host_allocator


def stages(d: int, n: int) -> list[tuple[str, callable, tuple, int, int]]:
  """(name, fn, args, flops, bytes) per stage; 4-byte float32 elements."""
  m = int(round(d**0.5))
  key = jax.random.key(0)
  x = jax.random.normal(key, (n, d))
  t = jax.random.normal(key, (m, n, m))
  w = jax.random.normal(key, (m, m, m))
  w_dense = jax.random.normal(key, (d, d))
  bmm = lambda a, b: lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,))))
  io = 2 * 4 * n * d   # read + write one activation
  return [
      ("dense x @ W", lambda x, w: x @ w, (x, w_dense), 2 * n * d * d, 4 * (2 * n * d + d * d)),
      ("copy x + 1", lambda x: x + 1, (x,), n * d, io),
      ("x [N,m,m] -> [m,N,m]", lambda x: x.reshape(n, m, m).transpose(1, 0, 2), (x,), 0, io),
      ("bmm [m,N,m] x [m,m,m]", bmm, (t, w), 2 * n * d * m, io + 4 * m**3),
      ("between cores [m,N,m] -> [m,N,m]^T", lambda t: t.transpose(2, 1, 0), (t,), 0, io),
      ("y [m,N,m] -> [N,d]", lambda t: t.transpose(1, 0, 2).reshape(n, d), (t,), 0, io),
  ]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096])
  parser.add_argument("--tokens", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  print(f"Load average at start: {os.getloadavg()[0]:.1f}; {args.tokens} tokens, float32, "
        f"median (min) of {args.repeats} round-robin repeats\n")
  for d in args.dims:
    rows = [(name, jax.jit(fn), a, f, b) for name, fn, a, f, b in stages(d, args.tokens)]
    times = {name: [] for name, *_ in rows}
    for _, fn, a, _, _ in rows:
      jax.block_until_ready(fn(*a))
    for _ in range(args.repeats):
      for name, fn, a, _, _ in rows:
        start = time.perf_counter()
        jax.block_until_ready(fn(*a))
        times[name].append(time.perf_counter() - start)
    print(f"### d = {d}\n\n| stage | MFLOP | MB moved | ms median (min) | GFLOP/s | GB/s |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, _, _, flops, nbytes in rows:
      med = statistics.median(times[name])
      print(f"| {name} | {flops / 1e6:.0f} | {nbytes / 1e6:.0f} | {1e3 * med:.1f} "
            f"({1e3 * min(times[name]):.1f}) | {flops / med / 1e9:.1f} | {nbytes / med / 1e9:.1f} |")
    print()


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
