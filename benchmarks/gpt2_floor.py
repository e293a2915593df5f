"""Where dense GPT-2's step time goes on this machine, and the floor its LM head sets.

  PYTHONPATH=. python benchmarks/gpt2_floor.py [--repeats 5]
                                               [--out benchmarks/results/gpt2_floor_cpu]

In one process, round-robin (``timing.time_rows``): the full train step of
configs/gpt2_owt.py at the size of benchmarks/train_step.py (d 256, 4 layers, context 256,
batch 8, vocab 50304, float32); the same step with a 256-token vocabulary (the blocks, the
embeddings and Adam without the big head); the head alone, logits = h W for h [B L, d] and
W [d, V], cross-entropy forward + backward (``step.xent``); each of its three GEMMs alone (h W,
dlogits W^T, h^T dlogits); and Adam (optax) on the [V, d] embedding and [d, V] head. The head's
GEMMs cannot run faster than XLA runs them alone, so their sum (plus Adam over the two big
matrices, memory-bound) bounds how far the whole step can shrink without changing the model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import optax

from benchmarks import timing, train_step as bench
from experiments import host_allocator
from experiments.train import step as steps

ARG = "kind=dense,width=256,depth=4,heads=4"


def _small_vocab(cfg):
  cfg.data.vocab = 256


def head_rows(quick: bool) -> list[tuple[str, str, callable]]:
  """The head's parts on random data of the benchmark's shapes: (part, name, build)."""
  cfg = bench.bench_config("gpt2_owt", ARG, quick)
  n, d, v = cfg.batch_size * cfg.data.seq_len, cfg.model.width, cfg.data.vocab
  k = jax.random.split(jax.random.key(0), 4)
  h, w = jax.random.normal(k[0], (n, d)), 0.02 * jax.random.normal(k[1], (d, v))
  labels, dlogits = jax.random.randint(k[2], (n,), 0, v), jax.random.normal(k[3], (n, v))
  head = jax.jit(jax.value_and_grad(lambda h, w: steps.xent(h @ w, labels), (0, 1)))
  gemms = {"h W": (lambda h, w: h @ w, (h, w)), "dlogits W^T": (lambda g, w: g @ w.T, (dlogits, w)),
           "h^T dlogits": (lambda h, g: h.T @ g, (h, dlogits))}
  gemm_flops = 2 * n * d * v
  rows = [("head", "head fwd+bwd (3 GEMMs + cross-entropy)",
           lambda: (lambda: head(h, w), lambda: None, gemm_flops))]
  for name, (fn, args) in gemms.items():
    jitted = jax.jit(fn)
    rows.append(("head", f"GEMM {name}", lambda f=jitted, a=args: (lambda: f(*a), lambda: None,
                                                                    gemm_flops // 3)))
  tx, params = optax.adam(1e-3), {"embed": w.T, "head": w}
  state = tx.init(params)
  adam = jax.jit(lambda p, s: optax.apply_updates(p, tx.update(p, s, p)[0]))
  rows.append(("adam", "Adam on embedding + head", lambda: (lambda: adam(params, state),
                                                            lambda: None, 0)))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
  parser.add_argument("--out", help="write OUT.md")
  args = parser.parse_args(argv)
  load = os.getloadavg()
  builders = [("step", "full step", lambda: bench.model_row("gpt2_owt", ARG, args.quick)),
              ("step", "full step, vocab 256",
               lambda: bench.model_row("gpt2_owt", ARG, args.quick, _small_vocab))]
  rows = timing.time_rows(builders + head_rows(args.quick), args.repeats)
  ms = {r.name: 1e3 * statistics.median(r.step_s) for r in rows}
  full = ms["full step"]
  lines = [f"Load average at start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; median "
           f"(min-max) of {args.repeats} round-robin repeats, float32, "
           f"host malloc: {timing.malloc_label()}\n",
           "| part | ms median (min-max) | GFLOP/s | share of the full step |",
           "|---|---:|---:|---:|"]
  lines += [f"| {r.name} | {timing.ms_range(r.step_s)} "
            f"| {r.gflops() if r.flops else float('nan'):.1f} | {ms[r.name] / full:.2f} |"
            for r in rows]
  gemms = sum(v for k, v in ms.items() if k.startswith("GEMM"))
  parts = ms["head fwd+bwd (3 GEMMs + cross-entropy)"] + ms["full step, vocab 256"]
  parts += ms["Adam on embedding + head"]
  lines += ["", f"Head GEMMs alone: {gemms:.0f} ms ({gemms / full:.2f} of the step). Head + "
            f"vocab-256 step + Adam on the two big matrices: {parts:.0f} ms (the full step: "
            f"{full:.0f} ms)."]
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    with open(f"{args.out}.md", "w") as f:
      f.write(f"# GPT-2 dense: where the step goes\n\nCommand: `python benchmarks/gpt2_floor.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n{text}")
  return rows


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
