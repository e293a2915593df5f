"""Structure-aware muP (Compute Better Spent): the one owner of every width and depth decision.

``MuP`` is built once from the config's ``mup`` section and handed to the models (init scale per
core, which cores start at zero, attention logit scale, residual-branch multiplier) and to the
optimizer (per-core learning-rate multipliers, Adam eps scales). Nothing else reads the
parametrization.

Every rule works on the cores a layer reports through ``cores()``, so a new family gets muP
for free. Base quantities come from the same architecture at ``base_width`` (``base_model``).

Parametrizations:
  - 'mup': each core's init std = fan_in^-1/2 min(1, sqrt(fan_out / fan_in)) (layers draw at
    this scale when built by ``structured.make``); residual-branch output projections and the readout
    start at zero (the layer's ``zero_init_cores``: its last core, one core per term for sums). Learning-rate multiplier of a core of a layer with n cores:
      Adam: (d_in_base / fan_in) / n                                   (CBS, TP5 Table 3)
      SGD:  (fan_out / fan_in) * (d_in_base / d_out_base) / n
    Both follow the spectral condition (Yang, Simon & Bernstein 2023): a core's update must have
    spectral norm ~ sqrt(fan_out / fan_in). Adam's update is sign-like with entries ~ lr, so
    lr ~ 1/fan_in; SGD's update is lr * gradient, whose entries are ~ 1/fan_out, so
    lr ~ fan_out / fan_in (the einsum-search SGD rule). For a dense layer at base width both are
    1, and SGD gives TP5's table: input lr ~ width, hidden ~ 1, readout ~ 1/width. Parameters
    that are not cores (biases, norms, embeddings: only their fan-out scales) keep 1 under Adam
    and get numel / numel_base (~ width) under SGD. 1/n is CBS's heuristic that n cores' updates
    add up to one dense layer's.
  - 'standard': every core's std = fan_in^-1/2 and every width multiplier is 1.

Depth-muP (Yang et al. 2023, Tensor Programs VI, Table 1): residual branches are scaled by
sqrt(base_depth / depth) (``MuP.branch_scale``; branches are ``ResidualBranch`` modules) and, under Adam, every parameter inside
a residual branch gets a further lr factor sqrt(base_depth / depth); under SGD the factor is 1
(branch_scale alone keeps SGD's feature updates O(1) in depth). ``base_depth = 0`` turns it off.

Adam eps (Everett et al. 2024; TP5): eps must shrink like the gradient it is added to, whose
entries are ~ 1/fan_out of the core (numel_base / numel for non-core parameters), else it damps
wide models' updates and fakes a negative coordinate-check slope. ``eps_scales`` gives each
parameter's eps factor relative to the base model (1 at base width).
"""

from __future__ import annotations

import dataclasses
import math

import jax
from flax import nnx

from structured.base import StructuredLinear, StructureError, mup_init_std

PARAMETRIZATIONS = ("mup", "standard")
OPTIMIZER_RULES = ("adam", "sgd")   # 'adamw' follows Adam's rule
ZERO_INIT_ROLES = ("residual_out", "readout")


class ResidualBranch(nnx.Module):
  """A residual branch ``h + branch_scale * f(h)``: the models' blocks subclass it, so depth-muP
  finds them by type."""

  branch_scale: float


@dataclasses.dataclass(frozen=True)
class MuP:
  """Every width/depth rule of one run (see the module doc). ``parametrization``: 'mup' or
  'standard'; ``base_width``: the width whose fan-ins the lr rule is relative to;
  ``base_depth``: depth-muP's base (0 = off); ``rule``: the optimizer's rule, 'adam' or 'sgd';
  ``eps_mup``: per-parameter Adam eps (Adam and 'mup' only); ``zero_init``: muP starts
  residual-branch outputs and the readout at zero (off: they keep their random init)."""

  parametrization: str
  base_width: int
  base_depth: int
  rule: str
  eps_mup: bool
  zero_init: bool

  def __post_init__(self):
    if self.parametrization not in PARAMETRIZATIONS:
      raise StructureError(f"mup.parametrization='{self.parametrization}' is unknown; valid: "
                           f"{list(PARAMETRIZATIONS)}")
    if self.rule not in OPTIMIZER_RULES:
      raise StructureError(f"unknown muP optimizer rule '{self.rule}'; valid: {list(OPTIMIZER_RULES)}")
    if self.base_depth < 0:
      raise StructureError(f"mup.base_depth={self.base_depth} must be an int >= 0 (0 = no depth-muP)")

  @property
  def is_mup(self) -> bool:
    return self.parametrization == "mup"

  def core_std(self, fan_in: int, fan_out: int) -> float:
    """Init std of a core: the spectral rule under muP, fan_in^-1/2 under 'standard'."""
    return mup_init_std(fan_in, fan_out) if self.is_mup else fan_in**-0.5

  def starts_at_zero(self, role: str) -> bool:
    """Whether a layer in ``role`` has its zero-init cores zeroed (muP: residual outputs, readout)."""
    return self.is_mup and self.zero_init and role in ZERO_INIT_ROLES

  def attention_logit_scale(self, d_head: int) -> float:
    """1/d_head under muP (TP5), 1/sqrt(d_head) otherwise."""
    return 1 / d_head if self.is_mup else d_head**-0.5

  def branch_scale(self, depth: int) -> float:
    """Depth-muP residual multiplier sqrt(base_depth / depth); 1 when off."""
    return math.sqrt(self.base_depth / depth) if self.base_depth else 1.0

  def depth_lr_factor(self, depth: int) -> float:
    """Depth-muP lr factor of residual-branch parameters: the branch scale under Adam, 1 under SGD."""
    return self.branch_scale(depth) if self.rule == "adam" else 1.0

  def lr_multipliers(self, model: nnx.Module, base_model: nnx.Module, depth: int) -> dict[tuple, float]:
    """The learning-rate multiplier of every parameter of ``model`` (a ``depth``-block model),
    keyed by its path. ``base_model``: the same architecture at ``base_width`` (an abstract
    ``nnx.eval_shape`` model is enough)."""
    base_layers, base_params = structured_layers(base_model), params(base_model)
    sgd_mup = self.rule == "sgd" and self.is_mup
    mults = {path: _numel_ratio(path, p, base_params) if sgd_mup else 1.0
             for path, p in params(model).items()}
    for path, layer in structured_layers(model).items():
      cores, base = layer.cores(), base_layers[path]
      for core in cores:
        if not self.is_mup:
          mult = 1.0
        elif self.rule == "sgd":
          mult = core.fan_out / core.fan_in * base.d_in / base.d_out / len(cores)
        else:
          mult = base.d_in / core.fan_in / len(cores)
        mults[path + (core.name,)] = mult
    factor = self.depth_lr_factor(depth)
    for branch in residual_branches(model):
      for path in mults:
        if path[:len(branch)] == branch:
          mults[path] *= factor
    return mults

  def eps_scales(self, model: nnx.Module, base_model: nnx.Module) -> dict[tuple, float] | None:
    """Adam eps of every parameter relative to the configured eps, or None where eps_mup does
    not apply (off, SGD, 'standard'): fan_out_base / fan_out of a core (the same-named core of
    the base model's layer; the layer's d_out_base / d_out if the family names its cores
    differently at base width), numel_base / numel for other parameters."""
    if not (self.eps_mup and self.rule == "adam" and self.is_mup):
      return None
    base_layers, base_params = structured_layers(base_model), params(base_model)
    scales = {path: 1.0 / _numel_ratio(path, p, base_params) for path, p in params(model).items()}
    for path, layer in structured_layers(model).items():
      base = base_layers[path]
      base_fan_out = {core.name: core.fan_out for core in base.cores()}
      for core in layer.cores():
        scales[path + (core.name,)] = (base_fan_out[core.name] / core.fan_out
                                       if core.name in base_fan_out else base.d_out / layer.d_out)
    return scales


def structured_layers(model: nnx.Module) -> dict[tuple, StructuredLinear]:
  """Every structured layer of ``model`` by its path."""
  return {tuple(path): node for path, node in nnx.iter_graph(model)
          if isinstance(node, StructuredLinear)}


def residual_branches(model: nnx.Module) -> dict[tuple, ResidualBranch]:
  """Every residual branch of ``model`` by its path."""
  return {tuple(path): node for path, node in nnx.iter_graph(model)
          if isinstance(node, ResidualBranch)}


def params(model: nnx.Module) -> dict[tuple, nnx.Param]:
  """Every parameter of ``model`` by its path (the keys the multipliers use)."""
  return {tuple(path): p for path, p in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _numel_ratio(path: tuple, param, base_params: dict) -> float:
  """numel / numel_base: how much a non-core parameter grew with width (its fan-out)."""
  base = base_params.get(path)
  return 1.0 if base is None else param.size / base.size


def describe(model: nnx.Module, mults: dict[tuple, float]) -> str:
  """A table of every core (path, shape, fan-in, fan-out, init std, final lr multiplier), then
  every other parameter whose multiplier is not 1."""
  rows = [f"{'core':44s} {'shape':>18s} {'fan_in':>7s} {'fan_out':>7s} {'std':>9s} {'lr_mult':>9s}"]
  listed = set()
  for path, layer in structured_layers(model).items():
    for core in layer.cores():
      w = getattr(layer, core.name)[...]
      key = path + (core.name,)
      listed.add(key)
      rows.append(f"{'/'.join(map(str, key)):44s} {str(tuple(w.shape)):>18s} {core.fan_in:7d} "
                  f"{core.fan_out:7d} {float(jax.numpy.std(w)):9.3g} {mults.get(key, 1.0):9.3g}")
  for key, p in params(model).items():
    if key not in listed and mults.get(key, 1.0) != 1.0:
      rows.append(f"{'/'.join(map(str, key)):44s} {str(tuple(p.shape)):>18s} {'':7s} {'':7s} "
                  f"{'':9s} {mults[key]:9.3g}")
  return "\n".join(rows)
