"""Unstructured sparse: a dense weight W[d_in, d_out] gated by a boolean mask that may move.

The mask (a ``masked.Mask`` variable: state, checkpointed and sharded with the model, never
trained) has one entry per weight, or per ``block`` x ``block`` square of weights (block
granularity). At init round(density * entries) entries are kept, drawn at random; the
algorithms in experiments/sparsity/ then prune, regrow or lift it inside the jitted step, and
also set the layer's density at setup (uniform or ERK over the model). The contraction that
runs is the dense masked matmul, 2 d_in d_out FLOPs per token; the ideal count is 2 nnz.

``straight_through`` (set by the sparsity method, not a hyperparameter) lets the gradient reach
every entry of W (SR-STE's update, RigL's dense gradient); the forward value is W ⊙ M either way.
muP: the fans are the effective ones, density * d_in and density * d_out, at the layer's initial
density (the multipliers are fixed for the run).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from structured import masked
from structured.base import Core, StructuredLinear, StructureError, einsum, init_core


class Sparse(StructuredLinear):
  kind = "sparse"

  def __init__(self, d_in: int, d_out: int, *, density: float = 0.1, block: int = 1,
               use_bias: bool = False, role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
      raise StructureError(f"{self.kind} density={density} must be in (0, 1] (the fraction of "
                           "weights kept)")
    masked.check_block(self.kind, d_in, d_out, block)
    self.block, self.straight_through = block, False
    grid = (d_in // block, d_out // block)
    kept = max(1, round(density * grid[0] * grid[1]))
    self.density = kept / (grid[0] * grid[1])
    self.mask = masked.Mask(masked.random_mask(rngs.params(), grid, kept))
    w = init_core(rngs, (d_in, d_out), *self._fans())   # the run's init rule (structured.make)
    self.w = nnx.Param(masked.apply(w[...], self.mask[...], block))

  def resample(self, density: float, key: jax.Array, std) -> None:
    """A fresh random mask keeping round(density * entries) (at least one), W redrawn at
    ``std(fan_in, fan_out)`` of the new effective fans (masked entries 0); called by the sparsity
    setup, outside jit."""
    mask_key, w_key = jax.random.split(key)
    cells = self.mask[...].size
    kept = max(1, round(density * cells))
    self.density = kept / cells
    self.mask[...] = masked.random_mask(mask_key, self.mask[...].shape, kept)
    w = jax.random.normal(w_key, self.w[...].shape, jnp.float32) * std(*self._fans())
    self.w[...] = masked.apply(w, self.mask[...], self.block)

  def mask_spec(self):
    return masked.MaskSpec("w", self.block)

  def live_mask(self):
    return self.mask[...]

  def _fans(self):
    nnz = round(self.density * self.d_in * self.d_out)
    return masked.effective_fans(nnz, self.d_in, self.d_out)

  def _matmul(self, x):
    return einsum("...i,io->...o", x, self.to_dense())

  def to_dense(self):
    return masked.apply(self.w[...], self.mask[...], self.block, self.straight_through)

  def num_params(self):
    """Live weights (the mask's kept entries, read now) plus bias; masked zeros not counted."""
    bias = 0 if self.bias is None else self.d_out
    return masked.live_count(self) + bias

  def flops_per_token(self):
    """FLOPs executed: the dense masked matmul, 2 d_in d_out, whatever the mask."""
    return 2 * self.d_in * self.d_out

  def ideal_flops_per_token(self):
    """2 nnz at the current mask (what a sparse kernel would cost)."""
    return 2 * masked.live_count(self)

  def cores(self):
    """One core; fans are the effective ones at the initial density."""
    return (Core("w", *self._fans()),)

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """Keeps the K entries (blocks: of largest Frobenius norm) of largest magnitude: optimal, the
    error being the summed squares of what is dropped."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    kept = int(jnp.sum(layer.mask[...]))
    layer.mask[...] = masked.keep_top(masked.block_scores(w_IxO, layer.block), kept)
    layer.w[...] = masked.apply(jnp.asarray(w_IxO, jnp.float32), layer.mask[...], layer.block)
    return layer
