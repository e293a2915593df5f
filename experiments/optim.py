"""Optimizer: optax AdamW/Adam/SGD with a schedule and per-core muP learning-rate multipliers.

The multipliers reach optax as labels (``optax.multi_transform``): every distinct multiplier
is one label whose transform scales the update, so no update code is hand-written here.
Weight decay is applied to matrices only (ndim >= 2), decoupled as in AdamW, and scaled by
the same multiplier as the learning rate (PyTorch param-group semantics).
"""

from __future__ import annotations

import jax
import ml_collections
import optax
from flax import nnx

from structured import mup

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant", "wsd")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and the valid choices."""


def schedule(cfg: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
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


def path_key(path) -> tuple:
  """A pytree key path as plain keys, without NNX's trailing 'value'."""
  keys = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
  return keys[:-1] if keys and keys[-1] == "value" else keys


def _label(mult: float) -> str:
  return f"x{mult:.6g}"


def make(cfg: ml_collections.ConfigDict, model: nnx.Module, base_model: nnx.Module,
         parametrization: str, steps: int) -> tuple[optax.GradientTransformation, dict[tuple, float]]:
  """The optax transformation for ``model`` and the per-core multipliers it applies."""
  if cfg.name not in OPTIMIZERS:
    raise ConfigError(f"optim.name='{cfg.name}' is unknown; valid: {list(OPTIMIZERS)}")
  mults = mup.lr_multipliers(model, base_model, parametrization)
  lr = schedule(cfg, steps)

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, _: _label(mults.get(path_key(p), 1.0)), params)

  def is_matrix(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)

  if cfg.name == "sgd":
    base = optax.trace(decay=cfg.b1) if cfg.b1 else optax.identity()
  else:
    base = optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  decay = cfg.weight_decay if cfg.name == "adamw" else 0.0
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity(),
      base,
      optax.add_decayed_weights(decay, mask=is_matrix) if decay else optax.identity(),
      optax.multi_transform({_label(m): optax.scale(m) for m in {*mults.values(), 1.0}}, labels),
      optax.scale_by_learning_rate(lr),
  )
  return tx, mults
