"""Optimizer: optax AdamW/Adam/SGD with a schedule and per-core muP learning-rate multipliers.

The multipliers (``MuP.lr_multipliers``: Adam's or SGD's width rule, times the
depth-muP factor) reach optax as labels (``optax.multi_transform``): every distinct multiplier
is one label whose transform scales the update, so no update code is hand-written here.
Weight decay is applied to matrices only (ndim >= 2), decoupled as in AdamW, and scaled by
the same multiplier as the learning rate (PyTorch param-group semantics).

``mup.eps_mup`` (default off; muP with Adam only) gives every parameter the Adam eps
``eps * mup.eps_scales`` (~ 1/width, like its gradient), so eps does not swamp the small
gradients of wide models (Everett et al. 2024: a fixed eps 1e-8 already matters at moderate
widths). Adam is invariant to scaling its input gradient except for eps (adam(c g, eps) =
adam(g, eps / c)), so it is applied by scaling each gradient by 1 / eps_scale before one
``scale_by_adam``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments.errors import ConfigError
from experiments.train.paths import path_key
from models import stack
from structured.mup import MuP

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant", "wsd")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimizer ``name`` (adamw, adam or sgd; b1 is SGD's momentum), its hyperparameters,
  ``grad_clip`` (global norm, 0 = off) and the lr ``schedule`` (see ``schedule``)."""
  name: str
  lr: float
  b1: float
  b2: float
  eps: float
  weight_decay: float
  grad_clip: float
  schedule: str
  warmup_steps: int
  final_lr_frac: float
  decay_frac: float

  def __post_init__(self):
    if self.name not in OPTIMIZERS:
      raise ConfigError(f"optim.name='{self.name}' is unknown; valid: {list(OPTIMIZERS)}")
    if self.schedule not in SCHEDULES:
      raise ConfigError(f"optim.schedule='{self.schedule}' is unknown; valid: {list(SCHEDULES)}")

  @property
  def mup_rule(self) -> str:
    """Which muP learning-rate rule the optimizer follows: 'sgd' or 'adam'."""
    return "sgd" if self.name == "sgd" else "adam"


def schedule(cfg: OptimConfig, steps: int) -> optax.Schedule:
  """Linear warmup then cosine to ``lr * final_lr_frac``, constant, or warmup-stable-decay."""
  lr, warmup = cfg.lr, min(cfg.warmup_steps, steps)
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1),
                                              end_value=lr * cfg.final_lr_frac)
  if cfg.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)],
                                [warmup])
  if cfg.schedule == "wsd":
    decay = max(1, int(cfg.decay_frac * steps))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr),
         optax.linear_schedule(lr, lr * cfg.final_lr_frac, decay)],
        [warmup, steps - decay])
  raise ConfigError(f"optim.schedule='{cfg.schedule}' is unknown; valid: {list(SCHEDULES)}")


def _label(mult: float) -> str:
  return f"x{mult:.6g}"


def scale_by_path(factors: dict[tuple, float]) -> optax.GradientTransformation:
  """Scales each parameter's update by ``factors[path]`` (1 if absent): one label per factor."""
  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, _: _label(factors.get(path_key(p), 1.0)), params)
  return optax.multi_transform({_label(f): optax.scale(f) for f in {*factors.values(), 1.0}}, labels)


def make(cfg: OptimConfig, model: nnx.Module, base_model: nnx.Module, mup: MuP, steps: int,
         depth: int) -> tuple[optax.GradientTransformation, dict[tuple, float], optax.Schedule]:
  """The optax transformation for ``model`` (``depth`` blocks), the per-parameter lr multipliers
  it applies (from ``mup``) and its learning-rate schedule. The update runs per tensor: stacked
  blocks (``model.scan_layers``, models/stack.py) are one tensor per role, so their update
  compiles once whatever the depth."""
  mults = mup.lr_multipliers(model, base_model, depth)
  lr = schedule(cfg, steps)
  eps_scales = mup.eps_scales(model, base_model)
  if cfg.name == "sgd":
    base = optax.trace(decay=cfg.b1) if cfg.b1 else optax.identity()
  else:
    base = optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  decay = cfg.weight_decay if cfg.name == "adamw" else 0.0
  tx = optax.chain(
      clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity(),
      (scale_by_path({k: 1 / v for k, v in eps_scales.items()}) if eps_scales else optax.identity()),
      base,
      optax.add_decayed_weights(decay, mask=_matrices) if decay else optax.identity(),
      scale_by_path(mults),
      optax.scale_by_learning_rate(lr),
  )
  return tx, mults, lr


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """``optax.clip_by_global_norm`` as one multiply of every gradient by min(1, max_norm / norm)
  (the same values to an ulp). optax divides each element by the norm instead, and XLA:CPU
  writes that quotient out (a divide being too dear to repeat in each consumer) before Adam's
  two moments read it: a pass over every gradient more, GPT-2 d 256's step 1.4% slower
  (vocab-sized embedding and head; benchmarks/results/gpt2_loss_chunks_cpu.md)."""
  def update(updates, state, params=None):
    del params
    scale = jnp.minimum(1.0, max_norm / optax.tree.norm(updates))
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state
  return optax.GradientTransformation(optax.init_empty_state, update)


def _matrices(params):
  """Weight decay's mask: the matrices (ndim >= 2; a stacked block's vectors are ndim 2 but
  not matrices)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim - stack.is_stacked(path_key(path)) >= 2, params)
