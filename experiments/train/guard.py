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

from experiments.train.paths import path_key
from experiments.train.stacking import Groups


def tensor_names(tree) -> tuple[str, ...]:
  """'a/b/c' per leaf of a parameter (or gradient) tree, in leaf order."""
  return tuple("/".join(map(str, path_key(path)))
               for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0])


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
    finite = Groups.of(grads).per_leaf(lambda g: jnp.all(jnp.isfinite(g)), grads)
    first = (self.step == 0) & ~(jnp.isfinite(loss) & jnp.all(finite))
    return dataclasses.replace(self, step=jnp.where(first, step.astype(jnp.int32), self.step),
                               loss=jnp.where(first, loss.astype(jnp.float32), self.loss),
                               finite=jnp.where(first, finite, self.finite))

  def first_bad(self) -> tuple[int, float, str | None] | None:
    """Host read (a device sync): (step, loss, first non-finite tensor or None when only the
    loss was) of the first non-finite step, or None while every step was finite."""
    step, loss, finite = jax.device_get((self.step, self.loss, self.finite))
    if not step:
      return None
    return int(step), float(loss), next((n for n, ok in zip(self.names, finite) if not ok), None)
