"""Time the three forms of a weight gradient t^T dy at the shapes the models give it.

  PYTHONPATH=. python benchmarks/weight_grad_forms.py [--repeats 7] [--shapes 1x512x256x50304]
                                                      [--out benchmarks/results/weight_grad_forms_cpu]

t [B, N, K] (the layer's input, tokens-major) and dy [B, N, M] (its output cotangent; B = 1: no
batch axis), contracting the N tokens into [B, K, M], as ``structured.base._weight_grad`` can form
it: the dot as written ("t^T dy": a transposed operand), (dy^T t)^T (the product transposed
after, behind an optimization barrier: the rule where M < K) and t transposed first, then a plain
product (the rule where ``structured.backend.transpose_tokens_first`` says). Timed round-robin in
one process (``timing.time_rows``); prints, and with ``--out`` writes, ms median (min-max) per
form, the fastest form and its GFLOP/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.timing import cpu_label, malloc_label, ms_range, time_rows
from experiments import host_allocator

# (B, N, K, M): GPT-2 d 256's head per loss chunk and whole, its blocks' projections (2048
# tokens), the CIFAR MLP's dense layers (1024 examples), a d = 1024 layer on 4096 tokens, and
# batched cores of Monarch (4 x 128) and BTT (32 or 64 wide)
SHAPES = [(1, 512, 256, 50304), (1, 2048, 256, 50304), (1, 2048, 256, 256), (1, 2048, 256, 1024),
          (1, 2048, 1024, 256), (1, 1024, 3072, 256), (1, 1024, 256, 1024), (1, 4096, 1024, 1024),
          (4, 4096, 128, 128), (32, 1024, 32, 32), (32, 4096, 32, 32), (64, 4096, 64, 64)]


def _dims(batched: bool, contract: tuple[int, int]):
  b = int(batched)
  return ((contract[0] + b,), (contract[1] + b,)), ((0,), (0,)) if batched else ((), ())


def forms(batched: bool) -> dict[str, callable]:
  swap = lambda x: jnp.swapaxes(x, -1, -2)
  return {
      "t^T dy": lambda t, dy: lax.dot_general(t, dy, _dims(batched, (0, 0))),
      "(dy^T t)^T": lambda t, dy: swap(lax.optimization_barrier(
          lax.dot_general(dy, t, _dims(batched, (0, 0))))),
      "t transposed first": lambda t, dy: lax.dot_general(
          lax.optimization_barrier(swap(t)), dy, _dims(batched, (1, 0))),
  }


def main(argv: list[str] | None = None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--shapes", nargs="+", metavar="BxNxKxM",
                      help="default: " + " ".join("x".join(map(str, s)) for s in SHAPES))
  parser.add_argument("--out", help="write OUT.md")
  args = parser.parse_args(argv)
  shapes = [tuple(map(int, s.split("x"))) for s in args.shapes] if args.shapes else SHAPES
  builders = []
  for b, n, k, m in shapes:
    lead = (b,) if b > 1 else ()
    keys = jax.random.split(jax.random.key(n + k + m), 2)
    t, dy = jax.random.normal(keys[0], (*lead, n, k)), jax.random.normal(keys[1], (*lead, n, m))
    for name, fn in forms(b > 1).items():
      step = jax.jit(fn)
      flops = 2 * b * n * k * m
      builders.append((f"{b}x{n}x{k}x{m}", name, lambda step=step, t=t, dy=dy, flops=flops:
                       (lambda: step(t, dy), lambda: 0, flops)))
  rows = time_rows(builders, args.repeats)
  load = os.getloadavg()
  lines = ["# Weight-gradient forms t^T dy, contracting the tokens\n",
           f"Command: `python benchmarks/weight_grad_forms.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n",
           f"{cpu_label()}, {jax.default_backend()}, jax {jax.__version__}, float32, host "
           f"malloc: {malloc_label()}; load average at end {load[0]:.1f} / {load[1]:.1f} / "
           f"{load[2]:.1f}. Median (min-max) ms of {args.repeats} round-robin repeats.\n",
           "| B x N x K x M | " + " | ".join(forms(False)) + " | fastest | its GFLOP/s |",
           "|---|" + "---:|" * (len(forms(False)) + 2)]
  for i in range(0, len(rows), len(forms(False))):
    group = rows[i:i + len(forms(False))]
    best = min(group, key=lambda r: statistics.median(r.step_s))
    gflops = best.flops / statistics.median(best.step_s) / 1e9
    lines.append(f"| {group[0].part} | " + " | ".join(ms_range(r.step_s) for r in group)
                 + f" | {best.name} | {gflops:.1f} |")
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    with open(args.out + ".md", "w") as f:
      f.write(text)
  return text


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
