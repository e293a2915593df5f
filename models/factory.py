"""The only place a model ConfigDict becomes a model."""

from __future__ import annotations

import ml_collections
from flax import nnx

import structured
from models.mlp import MLP
from structured import StructureError

MODELS = ("mlp",)
# Which layer types each `layers` choice structures (the rest stay dense).
LAYER_SELECTIONS = {
    "all": ("input", "ffn", "readout", "attn", "patch", "head"),
    "all_but_last": ("input", "ffn", "attn", "patch"),
    "ffn": ("ffn",),
    "intermediate": ("ffn", "attn"),
    "attn": ("attn",),
}


def linear_factory(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs):
  """``linear(layer_type, role, d_in, d_out)``: structured for the selected layer types, else dense."""
  if cfg.layers not in LAYER_SELECTIONS:
    raise StructureError(f"model.layers='{cfg.layers}' is unknown; valid: {sorted(LAYER_SELECTIONS)}")
  structured.family(cfg.kind)   # fails early with the valid kinds
  hparams = dict(cfg.structure)
  selected = LAYER_SELECTIONS[cfg.layers]

  def linear(layer_type: str, role: str, d_in: int, d_out: int):
    if layer_type in selected and cfg.kind != "dense":
      return structured.make(cfg.kind, d_in, d_out, rngs=rngs, use_bias=cfg.use_bias, role=role,
                             **hparams)
    return structured.make("dense", d_in, d_out, rngs=rngs, use_bias=cfg.use_bias, role=role)

  return linear


def build(cfg: ml_collections.ConfigDict, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Module:
  """The model ``cfg.name`` with input size ``d_in`` and output size ``d_out``."""
  if cfg.name not in MODELS:
    raise StructureError(f"model.name='{cfg.name}' is unknown; valid: {list(MODELS)}")
  linear = linear_factory(cfg, rngs)
  return MLP(d_in, d_out, cfg.width, cfg.depth, linear, expansion=cfg.expansion, rngs=rngs)


def build_base(cfg: ml_collections.ConfigDict, d_in: int, d_out: int) -> nnx.Module:
  """The abstract model at ``cfg.base_width``: it supplies muP's base fan-ins."""
  base_cfg = ml_collections.ConfigDict(cfg.to_dict())
  base_cfg.width = cfg.base_width
  return nnx.eval_shape(lambda: build(base_cfg, d_in, d_out, nnx.Rngs(0)))
