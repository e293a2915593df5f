"""Gradual magnitude pruning (Zhu & Gupta 2017): the run starts dense; every ΔT steps in the
window [start, end] each layer keeps its round(d_t x entries) largest-magnitude entries among
those still kept, d_t = d_f + (1 - d_f)(1 - (t - start)/(end - start))^3 (schedule.py). Pruned
weights are zeroed and never come back."""

from experiments.sparsity import static
from structured import masked

STRAIGHT_THROUGH = False
RESET_MOMENTS = True
grad = static.grad


def setup(layer, lp, key, std) -> None:
  """Dense start: an all-ones mask, the weight at the dense ``std``."""
  del lp
  layer.resample(1.0, key, std)


def update(w, mask, g, u, key, lp, schedule):
  """Keeps the planned count of largest |w| (block norms for block masks) among the kept."""
  del g, key, schedule
  keep = masked.keep_top(masked.block_scores(w, lp.block), lp.count(u), mask)
  return masked.apply(w, keep, lp.block), keep
