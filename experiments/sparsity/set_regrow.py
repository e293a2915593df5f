"""SET (Mocanu et al. 2018): every ΔT steps in the window, drop the n smallest-magnitude kept
entries and regrow n at uniformly random positions that were not kept, n = f(t) x kept with
RigL's cosine-decayed drop fraction f (schedule.py); density stays constant. Regrown weights
start at 0 and their optimizer moments are reset."""

import jax
import jax.numpy as jnp

from experiments.sparsity import static
from structured import masked

STRAIGHT_THROUGH = False
RESET_MOMENTS = True
setup, grad = static.setup, static.grad


def drop_and_grow(w, mask, n, grow_scores, lp):
  """(w, mask) after dropping the ``n`` smallest |w| of the kept entries and growing the ``n``
  top ``grow_scores`` among the entries not kept before (drop and grow sets are disjoint);
  dropped and regrown weights are 0."""
  kept = masked.keep_top(masked.block_scores(w, lp.block), lp.kept - n, mask)
  grown = masked.keep_top(grow_scores, n, ~mask)
  return masked.apply(w, kept, lp.block), kept | grown


def update(w, mask, g, u, key, lp, schedule):
  del g, schedule
  n = lp.count(u)
  return drop_and_grow(w, mask, n, jax.random.uniform(key, mask.shape, jnp.float32), lp)
