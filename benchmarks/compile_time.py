"""Compile time of the GPT-2 train step against depth: does ``model.scan_layers`` stop it growing?

  PYTHONPATH=. python benchmarks/compile_time.py [--depths 2,12] [--repeats 3]
                                                 [--out benchmarks/results/compile_time_cpu]

Each row builds configs/gpt2_owt.py (dense) at the benchmark's CPU size (d_model 256, 4 heads,
context 256, batch 8, float32; the vocabulary stays 50304) with the blocks unrolled or scanned,
and times ``lower(...).compile()`` (trace + lower + XLA compile), ``repeats`` times, each from a
cleared cache, of two programs: the forward + backward alone, and the train step the loop runs
(``guarded_train_step``: forward, backward, the AdamW update with muP multipliers and clipping,
the non-finite guard), and that step again without gradient clipping (``grad_clip=0``), whose
per-tensor norms are a large share of the update's program. Reports the median
(min, max) seconds, the optimized HLO's line count and the machine load (``uptime``). Writes
``OUT.md`` and ``OUT.csv``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.train_step import bench_config, spec_and_batch
from experiments import config, host_allocator
from experiments.train import optim, step as steps
from experiments.train.guard import Guard
from models import factory


@nnx.jit
def forward_backward(model, batch):
  return nnx.value_and_grad(steps.loss_fn)(model, batch, "lm")


def compile_seconds(depth: int, scan: bool, repeats: int) -> dict[str, tuple[list[float], int]]:
  """Per program ('fwd+bwd', 'step'): seconds of lower + compile, ``repeats`` times from a
  cleared cache, and the optimized HLO's line count."""
  cfg = bench_config("gpt2_owt", f"kind=dense,width=256,depth={depth},heads=4", quick=False)
  cfg.model.scan_layers = scan
  cfg = config.parse(cfg)
  spec, batch = spec_and_batch(cfg, np.random.default_rng(0))
  model = factory.build(cfg.model, spec, nnx.Rngs(0), cfg.mup)
  base = factory.build_base(cfg.model, spec, cfg.mup)
  tx, _, _ = optim.make(cfg.optim, model, base, cfg.mup, cfg.steps, cfg.model.depth)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  unclipped_tx, _, _ = optim.make(dataclasses.replace(cfg.optim, grad_clip=0.0), model, base,
                                  cfg.mup, cfg.steps, cfg.model.depth)
  unclipped = nnx.Optimizer(model, unclipped_tx, wrt=nnx.Param)
  batch = jax.tree.map(jnp.asarray, batch)
  guard = Guard.start(nnx.state(model, nnx.Param))
  programs = {"fwd+bwd": lambda: forward_backward.lower(model, batch),
              "step": lambda: steps.guarded_train_step.lower(model, optimizer, batch, guard, "lm"),
              "step, no clip": lambda: steps.guarded_train_step.lower(model, unclipped, batch,
                                                                      guard, "lm")}
  results = {}
  for name, lower in programs.items():
    times = []
    for _ in range(repeats):
      jax.clear_caches()
      start = time.perf_counter()
      compiled = lower().compile()
      times.append(time.perf_counter() - start)
    results[name] = times, len(compiled.as_text().splitlines())
  return results


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--depths", default="2,12")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--scan", default="0,1", help="which of unrolled (0) / scanned (1) to time")
  parser.add_argument("--out", default="benchmarks/results/compile_time_cpu")
  args = parser.parse_args(argv)
  load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
  rows = []
  for depth in map(int, args.depths.split(",")):
    for scan in map(int, args.scan.split(",")):
      for program, (t, lines) in compile_seconds(depth, bool(scan), args.repeats).items():
        rows.append(dict(program=program, depth=depth, scan_layers=bool(scan),
                         median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                         hlo_lines=lines))
        print(rows[-1], flush=True)
  lines = [f"# GPT-2 train-step compile time (lower + compile), {jax.device_count()} "
           f"{jax.default_backend()} device(s), {os.cpu_count()} cores",
           "", f"`uptime` at start: {load}", "",
           "| program | depth | scan_layers | median s (min, max) | optimized HLO lines |",
           "|---|---|---|---|---:|"]
  lines += [f"| {r['program']} | {r['depth']} | {r['scan_layers']} | {r['median_s']:.2f} "
            f"({r['min_s']:.2f}, {r['max_s']:.2f}) | {r['hlo_lines']} |" for r in rows]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(args.out + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  print("\n".join(lines))


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
