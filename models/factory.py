"""The only place a model config becomes a model.

``ModelConfig`` is the typed model section (built by experiments/config.py from the ConfigDict):
``structure`` (the family of the structured layer types) and ``layers`` (which layer types it
applies to), ``overrides`` (per layer type, a structure that wins over both), ``dropout``
(residual-branch and embedding dropout, 0 = off), ``dtype`` (compute dtype; params stay float32),
``scan_layers`` (the blocks stored stacked and run as one ``jax.lax.scan``, models/stack.py;
off by default, README "Compile time and scanned blocks"), ``remat`` (what each block keeps for
the backward, ``models.stack.REMAT``) and each model's
own fields. Every width/depth rule comes from the run's ``MuP``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

import structured
from configs.structure import StructureSpec
from models import gpt2, mlp, stack, vit
from structured import StructureError
from structured.mup import MuP

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
DENSE = StructureSpec("dense")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Fields every model reads; ``heads``/``qk_norm``/``tie_embeddings``/``patch``/``pool`` are
  read by the models that have them (0 / '' where a model has none)."""

  name: str
  structure: StructureSpec
  layers: str
  overrides: tuple[tuple[str, StructureSpec], ...]
  width: int
  depth: int
  expansion: int
  use_bias: bool
  dropout: float
  dtype: str
  scan_layers: bool
  remat: str
  heads: int = 0
  qk_norm: bool = False
  tie_embeddings: bool = False
  patch: int = 0
  pool: str = ""

  def __post_init__(self):
    if self.name not in MODELS:
      raise StructureError(f"model.name='{self.name}' is unknown; valid: {list(MODELS)}")
    if self.layers not in LAYER_SELECTIONS:
      raise StructureError(f"model.layers='{self.layers}' is unknown; valid: {sorted(LAYER_SELECTIONS)}")
    if self.remat not in stack.REMAT:
      raise StructureError(f"model.remat='{self.remat}' is unknown; valid: {list(stack.REMAT)}")
    if self.dtype not in DTYPES:
      raise StructureError(f"model.dtype='{self.dtype}' is unknown; valid: {list(DTYPES)}")
    if not 0 <= self.dropout < 1:
      raise StructureError(f"model.dropout={self.dropout} must be in [0, 1)")
    structured.family(self.structure.kind)   # fails early with the valid kinds
    for layer_type, spec in self.overrides:
      if layer_type not in MODEL_LAYER_TYPES[self.name]:
        raise StructureError(f"model.overrides has unknown layer type '{layer_type}' for model "
                             f"'{self.name}'; valid: {list(MODEL_LAYER_TYPES[self.name])}")
      structured.family(spec.kind)


def linear_factory(cfg: ModelConfig, rngs: nnx.Rngs, mup: MuP | None = None):
  """``linear(layer_type, role, d_in, d_out)``: an override's family for its layer type, else
  ``cfg.structure`` for the types ``cfg.layers`` selects, else dense; initialised by ``mup``."""
  overrides, selected = dict(cfg.overrides), LAYER_SELECTIONS[cfg.layers]

  def linear(layer_type: str, role: str, d_in: int, d_out: int):
    spec = overrides.get(layer_type, cfg.structure if layer_type in selected else DENSE)
    return structured.make(spec.kind, d_in, d_out, rngs=rngs, use_bias=cfg.use_bias, role=role,
                           mup=mup, **dict(spec.hparams))

  return linear


def build(cfg: ModelConfig, spec: dict, rngs: nnx.Rngs, mup: MuP) -> nnx.Module:
  """The model ``cfg.name`` for a task's ``spec`` (d_in/d_out for mlp, vocab/seq_len for gpt2,
  image_shape/d_out for vit), initialised and scaled by ``mup``."""
  linear = linear_factory(cfg, rngs, mup)
  common = dict(dtype=DTYPES[cfg.dtype], dropout=float(cfg.dropout),
                branch_scale=mup.branch_scale(cfg.depth), scan_layers=cfg.scan_layers,
                remat=cfg.remat, rngs=rngs)
  if cfg.name == "mlp":
    return mlp.MLP(spec["d_in"], spec["d_out"], cfg.width, cfg.depth, linear,
                   expansion=cfg.expansion, **common)
  scale = mup.attention_logit_scale(cfg.width // cfg.heads)
  if cfg.name == "gpt2":
    return gpt2.GPT2(spec["vocab"], spec["seq_len"], cfg.width, cfg.depth, cfg.heads, linear,
                     expansion=cfg.expansion, qk_norm=cfg.qk_norm,
                     tie_embeddings=cfg.tie_embeddings, logit_scale=scale, **common)
  if "image_shape" not in spec:
    raise StructureError(f"model.name='vit' needs an image task (spec with 'image_shape'); "
                         f"this task gives {sorted(spec)}")
  return vit.ViT(spec["image_shape"], spec["d_out"], cfg.width, cfg.depth, cfg.heads, linear,
                 patch=cfg.patch, pool=cfg.pool, expansion=cfg.expansion, qk_norm=cfg.qk_norm,
                 logit_scale=scale, **common)


def build_base(cfg: ModelConfig, spec: dict, mup: MuP) -> nnx.Module:
  """The abstract model at ``mup.base_width``: it supplies muP's base fan-ins."""
  base_cfg = dataclasses.replace(cfg, width=mup.base_width)
  return nnx.eval_shape(lambda: build(base_cfg, spec, nnx.Rngs(0), mup))
