"""N:M sparse: in every group of ``m`` consecutive inputs (along d_in, the contraction dim, as
NVIDIA's 2:4 sparse tensor cores require) each output keeps ``n`` weights.

The weight is stored dense with a mask beside it (a ``masked.Mask`` variable, not a Param: the
optimizer never touches it; experiments/sparsity/ may move it, e.g. SR-STE, whose
``straight_through`` passes the gradient to every entry of W). At init the mask is drawn at random (independent of the
weights); ``project`` keeps the n largest magnitudes of every group. The contraction that runs is the
dense masked matmul, 2 d_in d_out FLOPs per token; only sparse tensor cores (Blackwell, not
reachable from JAX on H100) would run the ideal 2 (n/m) d_in d_out.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from structured import masked
from structured.base import (Core, StructuredLinear, StructureError, check_int, einsum, init_core,
                             nearest_valid)


def top_n_of_m(scores_IxO: jax.Array, n: int, m: int) -> jax.Array:
  """Boolean mask keeping the n largest scores of every m consecutive rows (ties: first wins)."""
  d_in, d_out = scores_IxO.shape
  groups = scores_IxO.reshape(d_in // m, m, d_out)
  rank = jnp.argsort(jnp.argsort(-groups, axis=1, stable=True), axis=1, stable=True)
  return (rank < n).reshape(d_in, d_out)


class NMSparse(StructuredLinear):
  kind = "nm_sparse"

  def __init__(self, d_in: int, d_out: int, *, n: int = 2, m: int = 4, use_bias: bool = False,
               role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    m = check_int(self.kind, "m", m, 1, why=" (the group size along d_in, e.g. 4)")
    n = check_int(self.kind, "n", n, 1, m, "m", " (weights kept per group of m, e.g. n=2, m=4)")
    if d_in % m:
      raise StructureError(f"{self.kind} m={m} must divide d_in={d_in}; nearest valid d_in: "
                           f"{nearest_valid(d_in, lambda w: w % m == 0)}")
    self.n, self.m, self.straight_through = n, m, False
    self.mask = masked.Mask(top_n_of_m(jax.random.uniform(rngs.params(), (d_in, d_out)), n, m))
    w = init_core(rngs, (d_in, d_out), *self._fans())
    self.w = nnx.Param(jnp.where(self.mask[...], w[...], 0.0))

  def mask_spec(self):
    return masked.MaskSpec("w", 1, (self.n, self.m))

  def live_mask(self):
    return self.mask[...]

  def _fans(self):
    return masked.effective_fans(self.d_in * self.d_out * self.n // self.m, self.d_in, self.d_out)

  def _matmul(self, x):
    return einsum("...i,io->...o", x, self.to_dense())

  def to_dense(self):
    return masked.apply(self.w[...], self.mask[...], straight_through=self.straight_through)

  def num_params(self):
    """Learnable entries: the kept (n/m) d_in d_out weights plus bias. The stored dense ``w``
    also holds the masked zeros, which are not counted."""
    bias = 0 if self.bias is None else self.d_out
    return self.d_in * self.d_out * self.n // self.m + bias

  def flops_per_token(self):
    """FLOPs executed: the dense masked matmul, 2 d_in d_out."""
    return 2 * self.d_in * self.d_out

  def ideal_flops_per_token(self):
    """The sparse count 2 nnz = 2 (n/m) d_in d_out (sparse tensor cores only)."""
    return 2 * self.d_in * self.d_out * self.n // self.m

  def cores(self):
    """One core; fans are the effective ones, (n/m) d_in and (n/m) d_out."""
    return (Core("w", *self._fans()),)

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """Keeps the n largest |w| of every group of m along d_in: optimal, since groups are
    independent and each one's error is the squared sum of what it drops."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    layer.mask[...] = top_n_of_m(jnp.abs(w_IxO), layer.n, layer.m)
    layer.w[...] = jnp.where(layer.mask[...], w_IxO, 0.0)
    return layer
