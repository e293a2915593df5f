"""Static random masks (the "random pruning" baseline; Liu et al. 2022): drawn at init at the
layer's planned density (uniform or ERK; block_sparse rebuilds its K blocks to match), never
changed. N:M layers keep the random N:M mask they were built with."""

from experiments.sparsity.plan import LayerPlan

STRAIGHT_THROUGH = False
RESET_MOMENTS = True


def setup(layer, lp: LayerPlan, key, std) -> None:
  """A random mask at the planned density, the weight at ``std`` of its effective fans."""
  if lp.n_m is None:
    layer.resample(lp.kept / lp.cells, key, std)


def grad(w, mask, g, lp, schedule):
  """The masked forward already zeroes the gradient of pruned weights."""
  del w, mask, lp, schedule
  return g


def update(w, mask, g, u, key, lp, schedule):
  """Never called: a static plan has no update steps."""
  del g, u, key, lp, schedule
  return w, mask
