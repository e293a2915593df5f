"""When do block products beat one dense product? Checks ``masked.blocks_beat_dense`` by timing.

  PYTHONPATH=. python benchmarks/block_sparse_rule.py [--dims 1024] [--repeats 5]
      [--densities 0.1 0.25 0.5] [--blocks 8 16 32 64 128] [--out benchmarks/results/...]

For each width d, density and block b, a d x d block-sparse W (K random blocks, coordinates traced
as in training) times 4096 tokens, forward + backward (grads w.r.t. the blocks and x), two ways:
the block products (``masked.block_matmul``) and one dense product with W scattered into zeros
(the path ``masked.matmul`` takes when the rule says so), round-robin. Prints the measured time
ratio blocks / dense next to the rule's prediction K (1.6 b^2 + 2000) / d^2, and whether the rule
picked the faster path: run it on another backend to re-fit the rule's two constants there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import time_rows
from experiments import host_allocator
from structured import masked


def paths(d: int, density: float, block: int, tokens: int) -> tuple[dict[str, tuple], int]:
  """'blocks' and 'dense': (fwd+bwd, forward, flops) of the two ways to apply one random W with
  K blocks; and K."""
  n = d // block
  k = max(1, round(density * n * n))
  kept = np.random.default_rng(0).permutation(n * n) < k
  rows, cols = masked.coords(kept.reshape(n, n))
  ids = jnp.asarray(rows), jnp.asarray(cols)
  blocks = jax.random.normal(jax.random.key(0), (k, block, block)) / np.sqrt(density * d)
  x = jax.random.normal(jax.random.key(1), (tokens, d))
  apply = {"blocks": lambda b, x, ids: masked.block_matmul(x, b, *ids, d),
           "dense": lambda b, x, ids: x @ masked.to_dense(b, *ids, d, d)}
  out = {}
  for name, fn in apply.items():
    loss = lambda b, x, ids, fn=fn: jnp.sum(jnp.tanh(fn(b, x, ids)))
    grads, forward = jax.jit(jax.grad(loss, (0, 1))), jax.jit(loss)
    out[name] = (lambda g=grads: g(blocks, x, ids), lambda f=forward: f(blocks, x, ids), 0)
  return out, k


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dims", type=int, nargs="+", default=[1024])
  parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.25, 0.5])
  parser.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64, 128])
  parser.add_argument("--tokens", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", help="write OUT.md")
  args = parser.parse_args(argv)
  load = os.getloadavg()
  text = ("# Block products vs one dense product (masked.blocks_beat_dense)\n\n"
          f"Command: `python benchmarks/block_sparse_rule.py {' '.join(sys.argv[1:])}`\n\n"
          f"{jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPUs, "
          f"jax {jax.__version__}, float32, {args.tokens} tokens, fwd+bwd; median (min-max) of "
          f"{args.repeats} round-robin repeats. Load average at start: {load[0]:.1f} / "
          f"{load[1]:.1f}.\n\n"
          "| d | density | block | K | blocks ms | dense ms | blocks / dense | rule's estimate "
          "| rule picks | faster |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
  print(text, end="", flush=True)
  for d in args.dims:
    for density in args.densities:
      for block in (b for b in args.blocks if d % b == 0):
        built, k = paths(d, density, block, args.tokens)
        timed = {r.name: r for r in time_rows(
            [("rule", name, lambda b=b: b) for name, b in built.items()], args.repeats)}
        med = {name: statistics.median(r.step_s) for name, r in timed.items()}
        ms = {name: f"{1e3 * med[name]:.1f} ({1e3 * min(r.step_s):.1f}-{1e3 * max(r.step_s):.1f})"
              for name, r in timed.items()}
        estimate = k * (masked.BLOCK_GEMM_PENALTY * block**2 + masked.BLOCK_OVERHEAD_MACS) / d**2
        picks = "blocks" if masked.blocks_beat_dense(k, block, d, d) else "dense"
        faster = "blocks" if med["blocks"] < med["dense"] else "dense"
        line = (f"| {d} | {density:g} | {block} | {k} | {ms['blocks']} | {ms['dense']} "
                f"| {med['blocks'] / med['dense']:.2f} | {estimate:.2f} | {picks} | {faster} |\n")
        print(line, end="", flush=True)
        text += line
        host_allocator.release_free_memory()
  text += f"\nLoad average at end: {os.getloadavg()[0]:.1f}\n"
  if args.out:
    with open(args.out + ".md", "w") as f:
      f.write(text)


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
