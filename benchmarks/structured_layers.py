"""Benchmark every registered family on square d x d layers: params, FLOPs and fwd+bwd time.

  python -m benchmarks.structured_layers [--dims 256 512 1024 2048 4096] [--kinds btt low_rank ...] [--batch 256]
                       [--repeats 5] [--out PATH]

Each family is built with its preset in PRESETS (its defaults otherwise). Time is the median
over ``--repeats`` runs of one jitted forward + backward (y and the gradients for a fixed random
output cotangent w.r.t. the parameters and the input, ``timing.forward_backward``) on a
[batch, d] float32 batch, after a warm-up call, on the default device. Dense is always measured:
it is the baseline of the relative columns. A family that cannot be built at a width
(StructureError) is listed with the reason.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

import structured
from benchmarks.timing import cpu_label, forward_backward
from experiments import host_allocator
from structured import StructureError

PRESETS: dict[str, dict] = {
    "low_rank": {"rank_frac": 0.25}, "btt": {"rank": 1}, "monarch": {"blocks": 4},
    "block_sparse": {"density": 0.25}, "block_diag": {"blocks": 4}, "nm_sparse": {"n": 2, "m": 4},
    "kronecker": {"factors": 2}, "tt": {"cores": 3, "rank": 2},
    "einsum": {"theta": (0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0)},   # ES 'g1', an interior θ
}
DEFAULT_DIMS = (256, 512, 1024, 2048, 4096)


def time_fwd_bwd(layer: structured.StructuredLinear, batch: int, repeats: int) -> float:
  """Median seconds of one jitted forward + backward of ``layer`` on a [batch, d_in] batch."""
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  step = forward_backward(lambda params, x: nnx.merge(graphdef, params, rest)(x))
  x = jax.random.normal(jax.random.key(0), (batch, layer.d_in), jnp.float32)
  ct = jax.random.normal(jax.random.key(1), (batch, layer.d_out), jnp.float32)
  jax.block_until_ready(step(ct, params, x))   # compile + warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(ct, params, x))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(kind: str, d: int, batch: int, repeats: int) -> dict:
  """One table row: params, FLOPs/token and fwd+bwd seconds, or the reason it was skipped."""
  row = {"d": d, "kind": kind, "hparams": PRESETS.get(kind, {})}
  try:
    layer = structured.make(kind, d, d, rngs=nnx.Rngs(0), **row["hparams"])
  except StructureError as err:
    return {**row, "note": str(err)}
  return {**row, "params": layer.num_params(), "flops": layer.flops_per_token(),
          "seconds": time_fwd_bwd(layer, batch, repeats), "note": ""}


def _hparams(h: dict) -> str:
  return ", ".join(f"{k}={v}" for k, v in h.items()) or "defaults"


def markdown(d: int, rows: list[dict], batch: int) -> str:
  """The table of one width; FLOPs and time relative to the dense row."""
  dense = next(r for r in rows if r["kind"] == "dense")
  lines = [f"### d = {d} (square {d} x {d}, batch {batch})", "",
           "| family | hyperparameters | params | FLOPs/token | FLOPs vs dense "
           "| fwd+bwd ms/batch | time vs dense |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    if r["note"]:
      lines.append(f"| {r['kind']} | {_hparams(r['hparams'])} | skipped: {r['note']} "
                   "| | | | |")
      continue
    lines.append(f"| {r['kind']} | {_hparams(r['hparams'])} | {r['params']:,} | {r['flops']:,} "
                 f"| {r['flops'] / dense['flops']:.3f} | {1e3 * r['seconds']:.3f} "
                 f"| {r['seconds'] / dense['seconds']:.2f} |")
  return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.structured_layers",
      description="Params, FLOPs/token and measured forward+backward time of every registered "
                  "structured family at square d x d widths, relative to dense.")
  parser.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS),
                      help=f"square widths d to benchmark (default: {list(DEFAULT_DIMS)})")
  parser.add_argument("--kinds", nargs="+", choices=sorted(structured.FAMILIES),
                      default=sorted(structured.FAMILIES), metavar="KIND",
                      help=f"families to run (default: all registered: "
                           f"{', '.join(sorted(structured.FAMILIES))}); dense is always added "
                           "as the baseline")
  parser.add_argument("--batch", type=int, default=256, help="tokens per batch (default: 256)")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed runs after one warm-up; the median is reported (default: 5)")
  parser.add_argument("--out", help="also write the tables (markdown) to this file")
  args = parser.parse_args(argv)
  if args.batch < 1 or args.repeats < 1 or min(args.dims) < 1:
    parser.error("--batch, --repeats and every --dims value must be >= 1")
  return args


def main(argv: list[str] | None = None) -> list[dict]:
  """Prints (and with --out writes) one markdown table per width; returns every row."""
  args = parse_args(argv)
  kinds = ["dense"] + [k for k in args.kinds if k != "dense"]
  command = " ".join(["python -m benchmarks.structured_layers", *(sys.argv[1:] if argv is None else argv)])
  header = (f"# Structured families: params, FLOPs and forward+backward time\n\n"
            f"Command: `{command}`\n\n"
            f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax "
            f"{jax.__version__}. Time: median of {args.repeats} jitted forward+backward runs "
            f"(y and the gradients for a random output cotangent w.r.t. params and input) after "
            f"a warm-up, float32. Load average "
            f"at start: {os.getloadavg()[0]:.1f} on {cpu_label()}.\n")
  print(header, flush=True)
  rows, text = [], header
  for d in args.dims:
    table_rows = [measure(kind, d, args.batch, args.repeats) for kind in kinds]
    if table_rows[0]["note"]:
      raise StructureError(f"dense baseline failed at d={d}: {table_rows[0]['note']}")
    table = markdown(d, table_rows, args.batch)
    print(table, flush=True)
    rows, text = rows + table_rows, text + "\n" + table
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  return rows


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
