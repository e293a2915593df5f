"""The only place a model ConfigDict becomes a model.

Fields every model reads (defaults keep older configs working): ``kind``/``structure``/``layers``
(which layer types are structured, and how), ``overrides`` (per layer type: a structure spec
``{'kind': ..., **hyperparameters}`` that wins over kind/structure/layers for that type),
``dropout`` (residual-branch and embedding dropout, 0 = off), ``dtype`` (compute dtype; params
stay float32) and ``base_depth`` (depth-muP: every residual branch is scaled by
sqrt(base_depth / depth); 0 = off).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import ml_collections
from flax import nnx

import structured
from models import gpt2, mlp, vit
from structured import StructureError

MODELS = ("mlp", "gpt2", "vit")
MODEL_LAYER_TYPES = {"mlp": mlp.LAYER_TYPES, "gpt2": gpt2.LAYER_TYPES, "vit": vit.LAYER_TYPES}
# Which layer types each `layers` choice structures (the rest stay dense).
LAYER_SELECTIONS = {
    "all": ("input", "ffn", "readout", "attn", "patch", "head"),
    "all_but_last": ("input", "ffn", "attn", "patch"),
    "ffn": ("ffn",),
    "intermediate": ("ffn", "attn"),
    "attn": ("attn",),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _overrides(cfg: ml_collections.ConfigDict, layer_types: tuple[str, ...]) -> dict[str, tuple]:
  """``{layer_type: (kind, hyperparameters)}`` from ``cfg.overrides``, checked against the model."""
  found = {}
  for layer_type, spec in dict(cfg.get("overrides", None) or {}).items():
    if layer_type not in layer_types:
      raise StructureError(f"model.overrides has unknown layer type '{layer_type}' for model "
                           f"'{cfg.name}'; valid: {list(layer_types)}")
    spec = dict(spec)
    if "kind" not in spec:
      raise StructureError(f"model.overrides.{layer_type} needs a 'kind'; valid kinds: "
                           f"{sorted(structured.FAMILIES)}")
    kind = spec.pop("kind")
    structured.family(kind)   # fails early with the valid kinds
    found[layer_type] = (kind, spec)
  return found


def linear_factory(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs,
                   layer_types: tuple[str, ...] = LAYER_SELECTIONS["all"]):
  """``linear(layer_type, role, d_in, d_out)``: an override's family for its layer type, else
  ``cfg.kind`` for the types ``cfg.layers`` selects, else dense."""
  if cfg.layers not in LAYER_SELECTIONS:
    raise StructureError(f"model.layers='{cfg.layers}' is unknown; valid: {sorted(LAYER_SELECTIONS)}")
  structured.family(cfg.kind)   # fails early with the valid kinds
  overrides = _overrides(cfg, layer_types)
  hparams = dict(cfg.structure)
  selected = LAYER_SELECTIONS[cfg.layers]

  def linear(layer_type: str, role: str, d_in: int, d_out: int):
    if layer_type in overrides:
      kind, spec = overrides[layer_type]
    elif layer_type in selected and cfg.kind != "dense":
      kind, spec = cfg.kind, hparams
    else:
      kind, spec = "dense", {}
    return structured.make(kind, d_in, d_out, rngs=rngs, use_bias=cfg.use_bias, role=role, **spec)

  return linear


def _common(cfg: ml_collections.ConfigDict) -> dict:
  """The options every model takes: compute dtype, dropout rate, depth-muP branch scale."""
  dtype, dropout = cfg.get("dtype", "float32"), cfg.get("dropout", 0.0)
  base_depth = cfg.get("base_depth", 0)
  if dtype not in DTYPES:
    raise StructureError(f"model.dtype='{dtype}' is unknown; valid: {list(DTYPES)}")
  if not 0 <= dropout < 1:
    raise StructureError(f"model.dropout={dropout} must be in [0, 1)")
  if base_depth < 0 or int(base_depth) != base_depth:
    raise StructureError(f"model.base_depth={base_depth} must be an int >= 0 (0 = no depth-muP)")
  return dict(dtype=DTYPES[dtype], dropout=float(dropout),
              branch_scale=math.sqrt(base_depth / cfg.depth) if base_depth else 1.0)


def build(cfg: ml_collections.ConfigDict, spec: dict, rngs: nnx.Rngs,
          parametrization: str = "mup") -> nnx.Module:
  """The model ``cfg.name`` for a task's ``spec``: d_in/d_out (mlp), vocab/seq_len (gpt2),
  image_shape/d_out (vit)."""
  if cfg.name not in MODELS:
    raise StructureError(f"model.name='{cfg.name}' is unknown; valid: {list(MODELS)}")
  linear = linear_factory(cfg, rngs, MODEL_LAYER_TYPES[cfg.name])
  common = _common(cfg)
  if cfg.name == "mlp":
    return mlp.MLP(spec["d_in"], spec["d_out"], cfg.width, cfg.depth, linear,
                   expansion=cfg.expansion, rngs=rngs, **common)
  d_head = cfg.width // cfg.heads
  scale = 1 / d_head if parametrization == "mup" else d_head**-0.5
  if cfg.name == "gpt2":
    return gpt2.GPT2(spec["vocab"], spec["seq_len"], cfg.width, cfg.depth, cfg.heads, linear,
                     expansion=cfg.expansion, qk_norm=cfg.qk_norm,
                     tie_embeddings=cfg.tie_embeddings, logit_scale=scale, rngs=rngs, **common)
  if "image_shape" not in spec:
    raise StructureError(f"model.name='vit' needs an image task (spec with 'image_shape'); "
                         f"this task gives {sorted(spec)}")
  return vit.ViT(spec["image_shape"], spec["d_out"], cfg.width, cfg.depth, cfg.heads, linear,
                 patch=cfg.patch, pool=cfg.pool, expansion=cfg.expansion, qk_norm=cfg.qk_norm,
                 logit_scale=scale, rngs=rngs, **common)


def build_base(cfg: ml_collections.ConfigDict, spec: dict) -> nnx.Module:
  """The abstract model at ``cfg.base_width``: it supplies muP's base fan-ins."""
  base_cfg = ml_collections.ConfigDict(cfg.to_dict())
  base_cfg.width = cfg.base_width
  return nnx.eval_shape(lambda: build(base_cfg, spec, nnx.Rngs(0)))
