"""SR-STE for N:M (Zhou et al. 2021): the forward uses W ⊙ M, M the n largest |w| of every m
along d_in recomputed from the dense W (every ΔT steps, 1 = every step); the gradient passes
straight through to all of W, plus the sparse-refined decay λ_W (¬M ⊙ W) on the pruned
weights. The dense W and its moments persist (nothing is reset)."""

import jax
import jax.numpy as jnp

from structured.nm_sparse import top_n_of_m

STRAIGHT_THROUGH = True
RESET_MOMENTS = False


def setup(layer, lp, key, std) -> None:
  """A dense W at ``std`` of the layer's effective fans, M its n-of-m magnitude mask."""
  core = layer.cores()[0]
  w = jax.random.normal(key, (layer.d_in, layer.d_out), jnp.float32)
  getattr(layer, lp.weight)[...] = w * std(core.fan_in, core.fan_out)
  layer.mask[...] = top_n_of_m(jnp.abs(w), *lp.n_m)


def grad(w, mask, g, lp, schedule):
  """g(W ⊙ M) + λ_W (¬M ⊙ W)."""
  del lp
  return g + schedule.lambda_w * jnp.where(mask, 0.0, w)


def update(w, mask, g, u, key, lp, schedule):
  del mask, g, u, key, schedule
  return w, top_n_of_m(jnp.abs(w), *lp.n_m)
