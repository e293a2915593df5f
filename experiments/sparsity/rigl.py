"""RigL (Evci et al. 2020): like SET, but regrow where the dense gradient |dL/dW| (of the step's
batch, block norms for block masks) is largest among the entries not kept. Masked-dense layers
pass the dense gradient straight through (their backward computes it anyway) and the optimizer
sees it masked; slot-stored layers (block_sparse) get a ``masked.GradProbe`` whose gradient is
the dense one, taken on update steps only. Regrown weights start at 0, their moments reset."""

import jax.numpy as jnp

from experiments.sparsity import set_regrow, static
from structured import masked

STRAIGHT_THROUGH = True
RESET_MOMENTS = True


def setup(layer, lp, key, std) -> None:
  """``static.setup``; a slot-stored layer also gets its zero ``grad_probe``."""
  static.setup(layer, lp, key, std)
  if lp.slots:
    layer.grad_probe = masked.GradProbe(jnp.zeros((layer.d_in, layer.d_out), jnp.float32))


def grad(w, mask, g, lp, schedule):
  """The optimizer trains only kept weights: the dense gradient, masked."""
  del w, schedule
  return jnp.where(masked.expand(mask, lp.block), g, 0.0)


def update(w, mask, g, u, key, lp, schedule):
  del key, schedule
  n = lp.count(u)
  return set_regrow.drop_and_grow(w, mask, n, masked.block_scores(g, lp.block), lp)
