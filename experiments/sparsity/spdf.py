"""SPDF (Thangarasa et al. 2023): sparse pre-training with a static random mask, then at
``switch_frac`` of training the mask is lifted: every weight trains (the pruned ones from 0,
their moments reset), and the ideal FLOPs become the dense ones from the next step on."""

import jax.numpy as jnp

from experiments.sparsity import static

STRAIGHT_THROUGH = False
RESET_MOMENTS = True
setup, grad = static.setup, static.grad


def update(w, mask, g, u, key, lp, schedule):
  del g, u, key, lp, schedule
  return w, jnp.ones_like(mask)
