"""Causal attention's forward + backward on this backend: the library's XLA path against
``models.layers.attention`` whole and in query blocks of several sizes, the measurements behind
``structured.backend.QUERY_BLOCKS``.

  PYTHONPATH=. python benchmarks/attention.py [--shapes 8x256 2x1024] [--blocks 32 64 128 256]
                                              [--repeats 9] [--out benchmarks/results/attention_cpu]

Each shape is batch x positions, 4 heads of 64 (GPT-2 d 256 as benchmarks/train_step.py times
it: 8 x 256), float32, random q, k, v and output cotangent; rows round-robin in one process
(``timing.time_rows``). "whole" is ``layers.attention`` in one block: the full L x L square
with the heads ahead of the positions; "blocks of s" covers about (1 + s/L)/2 of it.
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax

from benchmarks.timing import Timing, forward_backward, malloc_label, ms_range, time_rows
from experiments import host_allocator
from models import layers
from structured import backend

HEADS, D_HEAD = 4, 64


def build(batch: int, positions: int, block: int | None, library: bool = False):
  """The row's ``Timing``: the library's attention, or ``layers.attention`` traced with query
  blocks of ``block`` positions (None: whole)."""
  q, k, v, ct = (jax.random.normal(key, (batch, positions, HEADS, D_HEAD))
                 for key in jax.random.split(jax.random.key(0), 4))
  if library:
    fn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=1 / D_HEAD, is_causal=True)
  else:
    fn = lambda q, k, v: layers.attention(q, k, v, scale=1 / D_HEAD, is_causal=True)
  step, forward = forward_backward(fn), jax.jit(fn)
  saved = backend.QUERY_BLOCKS, backend.MIN_QUERY_BLOCK
  try:   # blocks are chosen at trace time: positions chunks of at least `block` each
    backend.QUERY_BLOCKS = {jax.default_backend(): positions}
    backend.MIN_QUERY_BLOCK = block or positions
    jax.block_until_ready((step(ct, q, k, v), forward(q, k, v)))
  finally:
    backend.QUERY_BLOCKS, backend.MIN_QUERY_BLOCK = saved
  flops = 2 * 2 * batch * HEADS * positions**2 * D_HEAD   # q k^T and A v over the full square
  return Timing(lambda: step(ct, q, k, v), lambda: forward(q, k, v), flops)


def main(argv: list[str] | None = None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shapes", nargs="+", default=["8x256", "2x1024"], metavar="BxL")
  parser.add_argument("--blocks", type=int, nargs="+", default=[32, 64, 128, 256])
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--out", help="write OUT.md")
  args = parser.parse_args(argv)
  load = os.getloadavg()
  text = (f"# Causal attention, forward + backward\n\nCommand: `python benchmarks/attention.py "
          f"{' '.join(argv or [])}`\n\n{os.cpu_count()} CPUs, {jax.default_backend()}, jax "
          f"{jax.__version__}, float32, host malloc: {malloc_label()}. {HEADS} heads of {D_HEAD}. "
          f"Load average at start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}. Median "
          f"(min-max) of {args.repeats} round-robin repeats after a warm-up. Rule now: "
          f"QUERY_BLOCKS {backend.QUERY_BLOCKS}, MIN_QUERY_BLOCK {backend.MIN_QUERY_BLOCK}.\n")
  rows = []
  for shape in args.shapes:
    b, l = map(int, shape.split("x"))
    builders = [("library (jax.nn.dot_product_attention)", lambda: build(b, l, None, True)),
                ("whole (heads ahead)", lambda: build(b, l, None))]
    builders += [(f"blocks of {s}", lambda s=s: build(b, l, s)) for s in args.blocks if s < l]
    timed = time_rows([(shape, name, fn) for name, fn in builders], args.repeats)
    library = statistics.median(timed[0].step_s)
    text += (f"\n### {b} x {l} positions (rule: blocks of {backend.query_block(l)})\n\n"
             "| form | fwd+bwd ms median (min-max) | fwd ms median (min-max) | time vs library |\n"
             "|---|---:|---:|---:|\n")
    text += "".join(f"| {r.name} | {ms_range(r.step_s)} | {ms_range(r.fwd_s)} "
                    f"| {statistics.median(r.step_s) / library:.2f} |\n" for r in timed)
    rows += timed
  text += f"\nLoad average at end: {os.getloadavg()[0]:.1f}\n"
  print(text)
  if args.out:
    with open(args.out + ".md", "w") as f:
      f.write(text)
  return rows


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
