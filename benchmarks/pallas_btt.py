"""Forward+backward time of dense vs BTT (XLA einsum) vs BTT (Pallas), and block-sparse vs dense masked.

  python benchmarks/pallas_btt.py            # d in {1024, 2048, 4096, 8192}, 16384 tokens, bf16
  python benchmarks/pallas_btt.py --quick    # small d, runs the kernels in interpret mode (CPU check)

Prints a markdown table and saves it to benchmarks/results/pallas_btt_<device>.md and .csv.

Counted FLOPs (1 multiply-add = 2) are model FLOPs of forward + backward = 3x the forward:
dense 2 d_in d_out, BTT 2 r (d_in n1 + d_out m2), block-sparse 2 K b_in b_out per token. The
Pallas BTT backward also recomputes z (stage 1), which is executed but not counted.
%HBM is the minimum traffic (bf16 activations: read x, write y; read dy and x, write dx; plus
float32 params read twice and their gradients written) over the time, as a fraction of the
device's peak bandwidth. Timing: jit, 2 warm-ups, median of 5 repeats of --iters calls.
"""

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from benchmarks.timing import forward_backward
from experiments import host_allocator
from experiments.train import writers
from pallas_kernels import backend
from pallas_kernels.block_sparse import api as bs_api
from pallas_kernels.btt import api as btt_api
from pallas_kernels.btt import reference as btt_ref

# Peak HBM bandwidth (TB/s, vendor) by substrings of jax's device_kind; peak FLOP/s: writers.peak_flops.
PEAK_HBM = {"H100": 3.35, "H200": 4.8, "TPU v4": 1.2, "TPU v5 lite": 0.82, "TPU v5e": 0.82,
            "TPU v5p": 2.76, "TPU v6": 1.64}
RESULTS = pathlib.Path(__file__).parent / "results"


def median_seconds(step, args, iters):
  for _ in range(2):
    jax.block_until_ready(step(*args))
  times = []
  for _ in range(5):
    t = time.perf_counter()
    for _ in range(iters):
      out = step(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t) / iters)
  return statistics.median(times)


def max_rel_err(got, want):
  """Over y, dx and the param gradients that have the same shape in both (not blocks vs dense W)."""
  return max(float(jnp.abs(g.astype(jnp.float32) - w.astype(jnp.float32)).max()
                   / jnp.abs(w.astype(jnp.float32)).max())
             for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)) if g.shape == w.shape)


def btt_shapes(d, rank):
  m = next(f for f in range(int(d**0.5), 0, -1) if d % f == 0)   # m1 <= m2, as structured.factorize
  return m, d // m, rank


def _scatter(blocks, rows, cols, d):
  """The dense [d, d] matrix holding blocks[k] at block (rows[k], cols[k])."""
  nb, b = d // blocks.shape[1], blocks.shape[1]
  w = jnp.zeros((nb, nb, b, b)).at[jnp.array(rows), jnp.array(cols)].add(blocks)
  return w.transpose(0, 2, 1, 3).reshape(d, d)


def cases(d, rank, density, interpret):
  """(name, fn, params, forward FLOPs per token, name of the case it must agree with)."""
  key = jax.random.split(jax.random.key(d), 4)
  w = jax.random.normal(key[0], (d, d)) / d**0.5
  m1, m2, r = btt_shapes(d, rank)
  w0 = jax.random.normal(key[1], (m2, m1, r, m1)) / m1**0.5    # d -> d: n1, n2 = m1, m2
  w1 = jax.random.normal(key[2], (m1, m2, r, m2)) / (r * m2)**0.5
  b = max(d // 16, 8)
  nb = d // b
  pick = np.random.default_rng(d).choice(nb * nb, max(1, round(density * nb * nb)), replace=False)
  rows, cols = tuple(int(i) for i in pick // nb), tuple(int(i) for i in pick % nb)
  blocks = jax.random.normal(key[3], (len(pick), b, b)) / b**0.5
  mask = _scatter(jnp.ones_like(blocks), rows, cols, d)
  dense = lambda x, w: x @ w.astype(x.dtype)
  btt_flops = 2 * r * (d * m1 + d * m2)
  return [
      ("dense", dense, (w,), 2 * d * d, None),
      ("btt xla", btt_ref.btt, (w0, w1), btt_flops, None),
      ("btt pallas", lambda x, w0, w1: btt_api.btt(x, w0, w1, interpret=interpret), (w0, w1),
       btt_flops, "btt xla"),
      (f"dense masked {density:.0%}", lambda x, w: x @ (w * mask).astype(x.dtype),
       (_scatter(blocks, rows, cols, d),), 2 * d * d, None),
      (f"block-sparse pallas {density:.0%} b={b}",
       lambda x, blk: bs_api.block_sparse_matmul(x, blk, rows, cols, d, interpret=interpret),
       (blocks,), 2 * len(pick) * b * b, f"dense masked {density:.0%}"),
  ]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small d, kernels in interpret mode")
  parser.add_argument("--dims", type=int, nargs="*")
  parser.add_argument("--tokens", type=int)
  parser.add_argument("--rank", type=int, default=1)
  parser.add_argument("--density", type=float, default=0.125)
  parser.add_argument("--iters", type=int, default=20)
  args = parser.parse_args()
  dims = args.dims or ([64, 256] if args.quick else [1024, 2048, 4096, 8192])
  tokens = args.tokens or (512 if args.quick else 16384)
  iters = 2 if args.quick else args.iters
  device = jax.devices()[0]
  hbm_peak = next((v for k, v in PEAK_HBM.items() if k.lower() in device.device_kind.lower()), None)
  flops_peak = writers.peak_flops(device.device_kind)
  route = backend.route(args.quick or None)
  route = (f"{route.body} body" + (", interpreted" if route.interpret else "") if route.body
           else "reference fallback (no kernel)")

  header = (f"# Pallas BTT / block-sparse, forward+backward, bf16, {tokens} tokens, rank {args.rank}\n\n"
            f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
            f"Pallas route: {route} (block-sparse: TPU body only); peaks: "
            + (f"{flops_peak / 1e12:.0f} TFLOP/s, {hbm_peak} TB/s" if hbm_peak and flops_peak
               else "n/a (roofline n/a)") + "\n\n"
            + ("Interpret mode: a correctness run, its Pallas timings say nothing about speed.\n\n"
               if args.quick else "")
            + "| d | layer | ms | TFLOP/s | %peak FLOP/s | %HBM roofline | speedup vs dense | "
            "max rel err vs XLA |\n|---|---|---|---|---|---|---|---|\n")
  print(header, end="", flush=True)
  lines, rows = [header], []
  for d in dims:
    x = jax.random.normal(jax.random.key(0), (tokens, d), jnp.float32).astype(jnp.bfloat16)
    ct = jax.random.normal(jax.random.key(1), (tokens, d), jnp.float32).astype(jnp.bfloat16)
    outs, dense_s = {}, None
    for name, fn, params, flops, ref in cases(d, args.rank, args.density, args.quick):
      try:   # one case that fails to lower or compile is a row, not the end of the table
        step = forward_backward(fn)
        outs[name] = step(ct, x, *params)
        seconds = median_seconds(step, (ct, x, *params), iters)
      except Exception as e:   # noqa: BLE001 (reported in the table and the CSV)
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}".replace("|", "/")
        line = f"| {d} | {name} | failed: {why} ||||||\n"
        print(line, end="", flush=True)
        lines.append(line)
        rows.append({"d": d, "layer": name, "failed": why})
        continue
      if name == "dense":
        dense_s = seconds
      n_params = sum(p.size for p in params)
      min_bytes = 2 * tokens * 5 * d + 4 * 3 * n_params
      tflops = 3 * flops * tokens / seconds / 1e12
      hbm = min_bytes / seconds / (hbm_peak * 1e12) if hbm_peak else None
      peak = tflops * 1e12 / flops_peak if flops_peak else None
      err = max_rel_err(outs[name], outs[ref]) if ref in outs else None
      pct = lambda v: "n/a" if v is None else f"{v:.0%}"
      line = (f"| {d} | {name} | {seconds * 1e3:.3f} | {tflops:.3f} | {pct(peak)} | {pct(hbm)} | "
              f"{'n/a' if dense_s is None else f'{dense_s / seconds:.2f}x'} | "
              f"{'' if err is None else f'{err:.1e}'} |\n")
      print(line, end="", flush=True)
      lines.append(line)
      rows.append({"d": d, "layer": name, "ms": seconds * 1e3, "tflops": tflops, "peak_frac": peak,
                   "hbm_frac": hbm, "max_rel_err": err,
                   "speedup_vs_dense": None if dense_s is None else dense_s / seconds})
  RESULTS.mkdir(exist_ok=True)
  out = RESULTS / f"pallas_btt_{device.device_kind.lower().replace(' ', '_')}"
  out.with_suffix(".md").write_text("".join(lines))
  pd.DataFrame(rows).to_csv(out.with_suffix(".csv"), index=False)
  print(f"\nsaved {out}.md and .csv")


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
