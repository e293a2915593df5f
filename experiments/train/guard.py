"""The non-finite guard, kept on the device so training steps never wait on the host.

Each jitted step folds its loss and gradients into a ``Guard``: the first step whose loss or a
gradient was not finite, that step's loss and, per gradient tensor, whether it was all finite.
Later steps leave it as it is, so the loop reads it only where it must (before a metrics row, a
checkpoint or the end) and still names the first bad step and tensor exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from experiments.train.paths import by_path
from experiments.train.stacking import Groups
from models import stack


def tensor_names(tree) -> tuple[str, ...]:
  """'a/b/c' per leaf of a parameter (or gradient) tree, in leaf order; a stacked leaf
  (models/stack.py) gives one name per block, its per-block path ('attn/3/q/w')."""
  return tuple("/".join(map(str, name)) for path, x in by_path(tree).items()
               for name in (stack.per_block_paths(path, x.shape[0]) if stack.is_stacked(path)
                            else [path]))


def _all_finite(x: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(x))


def finite(tree) -> jax.Array:
  """Per ``tensor_names`` entry, whether it is all finite: alike unrolled tensors checked
  stacked (``Groups``: one check per role), stacked ones row by row."""
  flat = by_path(tree)
  if not any(stack.is_stacked(path) for path in flat):
    return Groups.of(tree).per_leaf(_all_finite, tree)
  return jnp.concatenate([jax.vmap(_all_finite)(x) if stack.is_stacked(path) else
                          _all_finite(x)[None] for path, x in flat.items()])


@struct.dataclass
class Guard:
  """``step``: the first non-finite step (int32, 0 while none); ``loss``: its loss;
  ``finite``: bool [tensors], whether each gradient tensor was finite at it; ``names``: the
  tensors, static."""
  step: jax.Array
  loss: jax.Array
  finite: jax.Array
  names: tuple[str, ...] = struct.field(pytree_node=False)

  @classmethod
  def start(cls, params) -> Guard:
    """A guard that has seen nothing, for gradients shaped like ``params``."""
    names = tensor_names(params)
    return cls(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32),
               jnp.ones(len(names), jnp.bool_), names)

  def update(self, step: jax.Array, loss: jax.Array, grads) -> Guard:
    """The guard after ``step`` (traced inside the train step): set if this is the first
    non-finite step, else unchanged."""
    if tensor_names(grads) != self.names:
      raise ValueError(f"gradient tensors {tensor_names(grads)} differ from the guard's {self.names}")
    flags = finite(grads)
    first = (self.step == 0) & ~(jnp.isfinite(loss) & jnp.all(flags))
    return dataclasses.replace(self, step=jnp.where(first, step.astype(jnp.int32), self.step),
                               loss=jnp.where(first, loss.astype(jnp.float32), self.loss),
                               finite=jnp.where(first, flags, self.finite))

  def first_bad(self) -> tuple[int, float, str | None] | None:
    """Host read (a device sync): (step, loss, first non-finite tensor or None when only the
    loss was) of the first non-finite step, or None while every step was finite."""
    step, loss, finite = jax.device_get((self.step, self.loss, self.finite))
    if not step:
      return None
    return int(step), float(loss), next((n for n, ok in zip(self.names, finite) if not ok), None)
