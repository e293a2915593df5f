"""Coordinate check (Compute Better Spent Fig. 2a): does each layer's update stay O(1) in width?

python -m experiments.coord_check --config configs/mlp_synthetic.py --structure kind=dense --structure kind=btt \
    --widths 64,128,256,512,1024 --out benchmarks/results/coord_check

For every family and width it builds the model exactly as training does (init, muP
multipliers, optimizer: Adam or SGD as the config says), trains ``steps`` steps on one fixed
batch, and records per structured layer the RMS of its output at init (h) and of its change
after training (dh). Under a correct muP, log dh against log width has slope ~0 for every layer.
``run_depth`` is the depth version (Depth-muP): at fixed width, the residual stream's dh should
not grow with the number of blocks.
"""

from __future__ import annotations

import argparse
import os

import jax.numpy as jnp
import numpy as np
import pandas as pd

from flax import nnx

from configs.structure import StructureSpec
from experiments import config as run_config, host_allocator
from experiments.train import loop, sharding, step
from models import stack
from structured import mup

DEFAULT_STRUCTURES = ("kind=dense", "kind=low_rank,rank_frac=0.25", "kind=kronecker", "kind=monarch", "kind=btt")


def layer_outputs(model, x) -> dict[str, jnp.ndarray]:
  """The output of every structured layer of ``model`` on ``x``, by its path: what the layers
  ``sow`` under NNX's ``capture`` (nothing in the model changes). Blocks stored per block:
  stacked ones (``model.scan_layers``) run inside a scan, whose layers cannot sow outward."""
  if any(isinstance(m, stack.Stacked) for _, m in nnx.iter_modules(model)):
    raise ValueError("layer_outputs needs blocks stored per block; build the model with "
                     "model.scan_layers=False (it computes the same outputs)")
  _, outputs = nnx.capture(model, nnx.Intermediate)(x)
  layers = {path + ("output",) for path in mup.structured_layers(model)}
  return {"/".join(map(str, path[:-1])): value.get_value()[0]
          for path, value in nnx.to_flat_state(outputs) if tuple(path) in layers}


def run(config, structures: list[StructureSpec], widths: list[int], steps: int = 3) -> pd.DataFrame:
  """One row per (structure, width, layer): h (RMS at init) and dh (RMS change after ``steps``)."""
  rows = []
  for spec in structures:
    for width in widths:
      cfg = config.copy_and_resolve_references()
      with cfg.unlocked():
        cfg.model.kind, cfg.model.width = spec.kind, width
        cfg.model.structure = dict(spec.hparams)
      before, after = _before_and_after(cfg, layer_outputs, steps)
      for layer, h in before.items():
        rows.append(dict(kind=str(spec), width=width, layer=layer, h=_rms(h), dh=_rms(after[layer] - h)))
  return pd.DataFrame(rows)


def _before_and_after(cfg, measure, steps: int):
  """``measure(model, x)`` on the first training batch at init and after ``steps`` steps on it,
  blocks unrolled and not rematerialized (the same numbers, with every layer's output in reach)."""
  with cfg.unlocked():
    cfg.model.scan_layers, cfg.model.remat = False, "none"
  run = loop.build(run_config.parse(cfg))
  batch = sharding.shard_batch(run.task.train_batch(0), run.mesh)
  before = measure(run.model, batch["x"])
  for _ in range(steps):
    step.train_step(run.model, run.optimizer, batch, run.task.loss)
  return before, measure(run.model, batch["x"])


def _rms(a) -> float:
  return float(jnp.sqrt(jnp.mean(jnp.square(a.astype(jnp.float32)))))


def residual_stream(mlp, x_BxI) -> jnp.ndarray:
  """The residual stream of an ``models.mlp.MLP`` after its last block (the final norm's input)."""
  h = mlp.embed(x_BxI.reshape(x_BxI.shape[0], -1).astype(mlp.dtype))
  return stack.run((mlp.blocks,), h)


def run_depth(config, depths: list[int], steps: int = 3) -> pd.DataFrame:
  """One row per depth of an MLP config: h and dh (RMS at init / change after ``steps``) of the
  residual stream after the last block. ``config.mup.base_depth`` > 0 turns on depth-muP."""
  rows = []
  for depth in depths:
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.model.depth = depth
    before, after = _before_and_after(cfg, residual_stream, steps)
    rows.append(dict(kind=cfg.model.kind, depth=depth, layer="residual", h=_rms(before),
                     dh=_rms(after - before)))
  return pd.DataFrame(rows)


def slopes(df: pd.DataFrame, column: str = "dh", against: str = "width") -> pd.DataFrame:
  """Least-squares slope of log(column) against log(against), per kind and layer."""
  def fit(g):
    return np.polyfit(np.log(g[against]), np.log(np.maximum(g[column], 1e-30)), 1)[0]
  return df.groupby(["kind", "layer"]).apply(fit, include_groups=False).rename("slope").reset_index()


def plot(df: pd.DataFrame, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  kinds = sorted(df["kind"].unique())
  fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.5), squeeze=False)
  for ax, kind in zip(axes[0], kinds):
    for layer, g in df[df["kind"] == kind].groupby("layer"):
      ax.plot(g["width"], g["dh"], marker="o", label=layer)
    ax.set(xscale="log", yscale="log", xlabel="width", ylabel="RMS dh", title=kind)
  axes[0][0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None) -> None:
  from experiments.main import _load_config
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/mlp_synthetic.py",
                      help="config file[:arg]; e.g. configs/mlp_synthetic.py:param=standard")
  parser.add_argument("--structure", action="append", type=StructureSpec.parse,
                      help="a structure, kind=NAME[,hparam=value...] (repeat the flag for more); "
                           f"default: {', '.join(DEFAULT_STRUCTURES)}")
  parser.add_argument("--widths", default="64,128,256,512,1024")
  parser.add_argument("--optim", default=None, choices=("adamw", "adam", "sgd"),
                      help="optimizer (default: the config's); SGD follows muP's SGD rule")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--out", default="coord_check", help="output prefix: writes OUT.csv and OUT.png")
  args = parser.parse_args(argv)
  config = _load_config(args.config)
  with config.unlocked():
    config.optim.name = args.optim or config.optim.name
  structures = args.structure or [StructureSpec.parse(s) for s in DEFAULT_STRUCTURES]
  df = run(config, structures, [int(w) for w in args.widths.split(",")], args.steps)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  df.to_csv(args.out + ".csv", index=False)
  plot(df, args.out + ".png")
  print(slopes(df).to_string(index=False))


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
