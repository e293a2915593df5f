"""Time full train steps and single structured layers: does a FLOP saving become time?

  PYTHONPATH=. python benchmarks/train_step.py [--quick] [--parts recipe gpt2 vit layer]
                                               [--repeats 5] [--rows btt monarch] [--dims 1024]
                                               [--scan] [--batch-chunks 1 4] [--loss-chunks 4]
                                               [--out benchmarks/results/train_step_cpu]

Parts (each row built from the repo's configs and run through the real step, with random data of
the task's shapes, so no dataset is read):
- ``recipe``: Compute Better Spent's CIFAR MLP (configs/mlp_cifar.py: depth 3, 3072 -> 10,
  w -> 4w -> w blocks, all but the readout structured, batch 1024, Adam with muP) for each family
  in RECIPE at its width;
- ``gpt2``: configs/gpt2_owt.py at d_model 256, 4 layers, 4 heads, context 256, batch 8, float32,
  dense and BTT; ``vit``: configs/vit_cifar.py at its default size, dense and BTT (``--scan``:
  each model row also with its blocks stacked and scanned, ``model.scan_layers``);
- ``layer``: one square d x d layer on 4096 tokens, d in {1024, 2048, 4096} (``--dims``): its
  output y and the gradients (params and input) for a fixed random output cotangent
  (``timing.forward_backward``).
Every row reports the median (min, max) milliseconds of the full step (forward, backward, Adam
update), of the forward alone and of forward + backward without the update (a model row's step
also runs Adam; a layer row's step is its forward + backward), the backward/forward ratio
(forward + backward over forward, minus 1), the achieved GFLOP/s (3 x forward FLOPs / step time:
forward + two backward matmuls), and that rate as a fraction of the dense row of the same part,
measured in the same process. ``--quick`` shrinks everything to seconds (tests run it). Writes
``OUT.md`` and ``OUT.csv``; ``--profile DIR`` also traces 3 steps of each row
(``python -m benchmarks.profile_summary DIR/<part>-<row>``). ``--batch-chunks`` and
``--loss-chunks`` replace this backend's chunk counts (structured/backend.py; 1 runs whole);
given several values, every model row is timed once per value in the same process.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import structured
from structured import backend
from benchmarks.timing import (Row, Timing, cpu_label, forward_backward, malloc_label, ms_range,
                               time_rows)
from experiments import config, host_allocator
from experiments.train import optim, step as steps
from models import factory

# (label, config file, config arg); widths as in issue #14's table, the other families at a
# FLOP budget comparable to dense w=256 (4.7M forward FLOPs per example)
RECIPE = [
    ("dense w=256", "mlp_cifar", "kind=dense,width=256"),
    ("dense w=512", "mlp_cifar", "kind=dense,width=512"),
    ("btt r=1 w=1024", "mlp_cifar", "kind=btt,rank=1,width=1024"),
    ("btt r=1 w=2048", "mlp_cifar", "kind=btt,rank=1,width=2048"),
    ("low_rank 0.25 w=1024", "mlp_cifar", "kind=low_rank,rank_frac=0.25,width=1024"),
    ("monarch b=4 w=512", "mlp_cifar", "kind=monarch,blocks=4,width=512"),
    ("kronecker w=1024", "mlp_cifar", "kind=kronecker,width=1024"),
    ("block_diag b=4 w=512", "mlp_cifar", "kind=block_diag,blocks=4,width=512"),
    ("tt c=3 r=2 w=1024", "mlp_cifar", "kind=tt,cores=3,rank=2,width=1024"),
    ("blast w=512", "mlp_cifar", "kind=blast,width=512"),
    ("pixelfly w=512", "mlp_cifar", "kind=pixelfly,width=512"),
    ("block_sparse 0.25 w=512", "mlp_cifar", "kind=block_sparse,density=0.25,width=512"),
    ("nm_sparse 2:4 w=384", "mlp_cifar", "kind=nm_sparse,width=384"),
    ("sparse_lowrank w=512", "mlp_cifar", "kind=sparse_lowrank,width=512"),
]
MODELS = [
    ("gpt2 dense", "gpt2_owt", "kind=dense,width=256,depth=4,heads=4"),
    ("gpt2 btt r=4", "gpt2_owt", "kind=btt,rank=4,width=256,depth=4,heads=4"),
    ("vit dense", "vit_cifar", "kind=dense"),
    ("vit btt r=1", "vit_cifar", "kind=btt,rank=1"),
]
# single-layer rows: name -> (family, hyperparameters); block_sparse at its default block (16,
# which runs as the dense product: masked.blocks_beat_dense) and at 128 (block products)
LAYERS = {"dense": ("dense", {}), "btt": ("btt", {"rank": 1}), "monarch": ("monarch", {"blocks": 4}),
          "kronecker": ("kronecker", {}), "block_diag": ("block_diag", {"blocks": 4}),
          "low_rank": ("low_rank", {"rank_frac": 0.25}),
          "block_sparse": ("block_sparse", {"density": 0.25}),
          "block_sparse b=128": ("block_sparse", {"density": 0.25, "block": 128}),
          "pixelfly": ("pixelfly", {}), "tt": ("tt", {"cores": 3, "rank": 2})}


def bench_config(name: str, arg: str, quick: bool):
  """The ConfigDict of configs/<name>.py:<arg>, float32, at the benchmark's sizes."""
  cfg = __import__(f"configs.{name}", fromlist=["get_config"]).get_config(arg)
  cfg.model.dtype = "float32"
  if name == "gpt2_owt":
    cfg.batch_size, cfg.data.seq_len = 8, 256
  if quick:
    cfg.batch_size = 8
    cfg.model.width, cfg.model.depth = min(cfg.model.width, 64), 1
    if name == "gpt2_owt":
      cfg.data.seq_len, cfg.data.vocab = 16, 512
  return cfg


def spec_and_batch(cfg, rng: np.random.Generator) -> tuple[dict, dict]:
  b = cfg.batch_size
  if cfg.model.name == "gpt2":
    vocab, seq = cfg.data.vocab, cfg.data.seq_len
    tokens = rng.integers(0, vocab, (b, seq + 1))
    return {"vocab": vocab, "seq_len": seq}, {"x": tokens[:, :-1], "y": tokens[:, 1:]}
  classes = 100 if cfg.data.name == "cifar100" else 10
  spec = {"image_shape": (32, 32, 3), "d_in": 3072, "d_out": classes}
  return spec, {"x": rng.standard_normal((b, 32, 32, 3), np.float32),
                "y": rng.integers(0, classes, (b,))}


def model_row(config_name: str, arg: str, quick: bool, edit=lambda cfg: None) -> Timing:
  """A row's step, forward, flops and forward + backward: the config's model, muP init and
  optimizer, as the training loop builds them (experiments/train/loop.py), on random data of the
  task's shapes; ``edit`` may change the ConfigDict first."""
  raw = bench_config(config_name, arg, quick)
  edit(raw)
  cfg = config.parse(raw)
  spec, batch = spec_and_batch(cfg, np.random.default_rng(0))
  model = factory.build(cfg.model, spec, nnx.Rngs(0), cfg.mup)
  base = factory.build_base(cfg.model, spec, cfg.mup)
  tx, _, _ = optim.make(cfg.optim, model, base, cfg.mup, cfg.steps, cfg.model.depth)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  loss = "lm" if cfg.model.name == "gpt2" else "xent"
  batch = jax.tree.map(jnp.asarray, batch)
  forward = nnx.jit(lambda m, b: steps.loss_fn(m, b, loss))
  grads = nnx.jit(lambda m, b: nnx.value_and_grad(lambda m: steps.loss_fn(m, b, loss))(m))
  flops = (model.flops_per_example(count_lookup=False) if loss == "lm"
           else model.flops_per_example())   # what XLA executes: the embedding is a lookup
  return Timing(lambda: steps.train_step(model, optimizer, batch, loss),
                lambda: forward(model, batch), flops * cfg.batch_size, lambda: grads(model, batch))


def layer_row(name: str, d: int, tokens: int) -> Timing:
  """A row's timing (its step is the forward + backward) for one square d x d layer,
  ``LAYERS[name]``."""
  kind, hparams = LAYERS[name]
  layer = structured.make(kind, d, d, rngs=nnx.Rngs(0), **hparams)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def apply(params, x, rest):   # the other state (block_sparse's coordinates) traced, as in training
    return nnx.merge(graphdef, params, rest)(x)

  step, forward = forward_backward(apply, n_diff=2), jax.jit(apply)
  x, dy = (jax.random.normal(jax.random.key(k), (tokens, d), jnp.float32) for k in (0, 1))
  return Timing(lambda: step(dy, params, x, rest), lambda: forward(params, x, rest),
                layer.flops_per_token() * tokens)


def table(rows: list[Row], title: str) -> str:
  dense = rows[0]   # every table's first row is its dense baseline
  dense_step = statistics.median(dense.step_s)
  lines = [f"### {title}", "",
           "| row | fwd GFLOP | step ms median (min-max) | fwd ms median (min-max) "
           "| fwd+bwd ms median (min-max) | bwd/fwd | GFLOP/s | GFLOP/s vs dense | time vs dense |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    step, fwd = statistics.median(r.step_s), statistics.median(r.fwd_s)
    bwd = statistics.median(r.fwd_bwd_s()) - fwd
    lines.append(f"| {r.name} | {r.flops / 1e9:.3f} | {ms_range(r.step_s)} | {ms_range(r.fwd_s)} "
                 f"| {ms_range(r.fwd_bwd_s())} | {bwd / fwd:.2f} | {r.gflops():.1f} "
                 f"| {r.gflops() / dense.gflops():.2f} | {step / dense_step:.2f} |")
  return "\n".join(lines) + "\n"


def _scanned(remat: str):
  def edit(cfg) -> None:
    cfg.model.scan_layers, cfg.model.remat = True, remat
  return edit


def _chunks(batch_chunks: int | None, loss_chunks: int | None) -> None:
  """Sets backend's chunk counts on this backend (None: leave as they are)."""
  for count, name in ((batch_chunks, "BATCH_CHUNKS"), (loss_chunks, "LOSS_CHUNKS")):
    if count is not None:
      setattr(backend, name, {jax.default_backend(): count})


def _traced_under(chunks: tuple, build):
  """``build`` whose functions are first run (traced) under the chunk counts ``chunks``, which
  apply at trace time only, so rows with different counts time side by side in one process
  (``build`` itself where nothing is set)."""
  if chunks == (None, None):
    return build

  def built():
    saved = backend.BATCH_CHUNKS, backend.LOSS_CHUNKS
    try:
      _chunks(*chunks)
      timing = Timing(*build())
      jax.block_until_ready([f() for f in (timing.step, timing.forward, timing.grads) if f])
    finally:
      backend.BATCH_CHUNKS, backend.LOSS_CHUNKS = saved
    return timing
  return built


def builders(parts: list[str], quick: bool, dims: tuple[int, ...] = (1024, 2048, 4096),
             scan: bool = False, chunks: list[tuple] = ((None, None),)) -> dict[str, list[tuple]]:
  """Per table title, the (part, name, build) of its rows; the first row is its dense baseline.
  ``scan``: each model row is followed by its twins with ``model.scan_layers``, without and with
  ``model.remat='full'``. ``chunks``: each model row once per (batch, loss) chunk counts (``_chunks``),
  named by them when there are several."""
  def rows(part, table):
    for label, c, a in table:
      for counts in chunks:
        name = label + (" [batch %s / loss %s chunks]" % counts if len(chunks) > 1 else "")
        yield part, name, _traced_under(counts, lambda c=c, a=a: model_row(c, a, quick))
        for remat in ("none", "full") if scan else ():
          yield (part, name + ", scanned" + (f", remat={remat}" if remat != "none" else ""),
                 _traced_under(counts, lambda c=c, a=a, r=remat: model_row(c, a, quick,
                                                                         _scanned(r))))

  out = {}
  if "recipe" in parts:
    out["CIFAR MLP recipe: full train step (batch 1024)"] = list(
        rows("recipe", [RECIPE[0], RECIPE[2]] if quick else RECIPE))
  for part, prefix, title in (("gpt2", "gpt2", "GPT-2 d 256, 4 layers, context 256, batch 8"),
                              ("vit", "vit", "ViT (configs/vit_cifar.py), batch 256")):
    if part in parts:
      out[title] = list(rows(part, [m for m in MODELS if m[0].startswith(prefix)]))
  if "layer" in parts:
    dims, tokens = ((128,), 256) if quick else (dims, 4096)
    kinds = ["dense", "btt"] if quick else list(LAYERS)
    for d in dims:
      out[f"Single layer d = {d}, {tokens} tokens, forward + backward"] = [
          ("layer", kind, lambda k=kind, d=d: layer_row(k, d, tokens)) for kind in kinds]
  return out


def header(args, command: str) -> str:
  load = os.getloadavg()
  return (f"# Train-step and layer timings\n\nCommand: `{command}`\n\n"
          f"Machine: {cpu_label()}, "
          f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"float32, host malloc: {malloc_label()} "
          f"(experiments/host_allocator.py). Load average at start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(1 / 5 / 15 min). Median (min-max) of {args.repeats} round-robin repeats after a "
          "warm-up; GFLOP/s = 3 x forward FLOPs / step time. Chunks (structured/backend.py): "
          f"MLP batch {backend.BATCH_CHUNKS}, LM loss {backend.LOSS_CHUNKS}.\n")


def main(argv: list[str] | None = None) -> list[Row]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--parts", nargs="+", default=["recipe", "gpt2", "vit", "layer"],
                      choices=["recipe", "gpt2", "vit", "layer"])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rows", nargs="+", metavar="TEXT",
                      help="only the rows whose name contains one of these (each table keeps its "
                           "dense baseline row)")
  parser.add_argument("--dims", type=int, nargs="+", default=[1024, 2048, 4096],
                      help="the single-layer widths d (part 'layer')")
  parser.add_argument("--scan", action="store_true",
                      help="also time every model row with model.scan_layers (stacked blocks), "
                           "without and with model.remat='full'")
  for flag, name in (("--batch-chunks", "BATCH_CHUNKS"), ("--loss-chunks", "LOSS_CHUNKS")):
    parser.add_argument(flag, type=int, nargs="+", metavar="N",
                        help=f"backend.{name} on this backend (1: whole); several: each model row "
                             "once per value, side by side")
  parser.add_argument("--out", help="write OUT.md and OUT.csv")
  parser.add_argument("--profile", metavar="DIR",
                      help="after timing, trace 3 steps of each row into DIR/<part>-<row>")
  args = parser.parse_args(argv)
  chunks = list(itertools.product(args.batch_chunks or [None], args.loss_chunks or [None]))
  if len(chunks) == 1:
    _chunks(*chunks[0])
  command = " ".join(["python benchmarks/train_step.py", *(sys.argv[1:] if argv is None else argv)])
  text, rows = header(args, command), []
  print(text, flush=True)
  for title, part_rows in builders(args.parts, args.quick, tuple(args.dims), args.scan,
                                         chunks).items():
    if args.rows:
      part_rows = part_rows[:1] + [r for r in part_rows[1:] if any(t in r[1] for t in args.rows)]
    timed = time_rows(part_rows, args.repeats, args.profile)
    host_allocator.release_free_memory()   # the next table's buffers differ in size
    section = table(timed, title)
    print(section, flush=True)
    text, rows = text + "\n" + section, rows + timed
  text += f"\nLoad average at end: {os.getloadavg()[0]:.1f}\n"
  if args.out:
    with open(args.out + ".md", "w") as f:
      f.write(text)
    with open(args.out + ".csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["part", "row", "fwd_flops", "step_ms_median", "step_ms_min", "step_ms_max",
                       "fwd_ms_median", "fwd_bwd_ms_median", "gflops_per_s"])
      for r in rows:
        writer.writerow([r.part, r.name, r.flops, 1e3 * statistics.median(r.step_s),
                         1e3 * min(r.step_s), 1e3 * max(r.step_s),
                         1e3 * statistics.median(r.fwd_s), 1e3 * statistics.median(r.fwd_bwd_s()),
                         r.gflops()])
  return rows


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
