"""The only place a model ConfigDict becomes a model."""

from __future__ import annotations

import ml_collections
from flax import nnx

import structured
from models.gpt2 import GPT2
from models.mlp import MLP
from structured import StructureError

MODELS = ("mlp", "gpt2")
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


def build(cfg: ml_collections.ConfigDict, spec: dict, rngs: nnx.Rngs,
          parametrization: str = "mup") -> nnx.Module:
  """The model ``cfg.name`` for a task's ``spec`` (d_in/d_out, or vocab/seq_len)."""
  if cfg.name not in MODELS:
    raise StructureError(f"model.name='{cfg.name}' is unknown; valid: {list(MODELS)}")
  linear = linear_factory(cfg, rngs)
  if cfg.name == "mlp":
    return MLP(spec["d_in"], spec["d_out"], cfg.width, cfg.depth, linear,
               expansion=cfg.expansion, rngs=rngs)
  d_head = cfg.width // cfg.heads
  scale = 1 / d_head if parametrization == "mup" else d_head**-0.5
  return GPT2(spec["vocab"], spec["seq_len"], cfg.width, cfg.depth, cfg.heads, linear,
              expansion=cfg.expansion, qk_norm=cfg.qk_norm, tie_embeddings=cfg.tie_embeddings,
              logit_scale=scale, rngs=rngs)


def build_base(cfg: ml_collections.ConfigDict, spec: dict) -> nnx.Module:
  """The abstract model at ``cfg.base_width``: it supplies muP's base fan-ins."""
  base_cfg = ml_collections.ConfigDict(cfg.to_dict())
  base_cfg.width = cfg.base_width
  return nnx.eval_shape(lambda: build(base_cfg, spec, nnx.Rngs(0)))
