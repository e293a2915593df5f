"""Block Tensor-Train with 2 cores (Compute Better Spent).

d_in = m1 * m2 and d_out = n1 * n2. The input is viewed as x[m2, m1] and the output as
y[n1, n2]:  z[m2, r, n1] = sum_m1 x[m2, m1] W0[m2, m1, r, n1];
            y[n1, n2]    = sum_{m2, r} z[m2, r, n1] W1[n1, m2, r, n2].
W0 is a batch of m2 maps m1 -> r*n1, W1 a batch of n1 maps r*m2 -> n2, so
params = FLOPs/2 = r (d_in n1 + d_out m2). Monarch is a BTT with fixed factors (monarch.py).
``impl='pallas'`` runs the fused kernel of pallas_kernels/btt (same layout).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import Core, StructuredLinear, StructureError, einsum, factorize, init_core

IMPLS = ("xla", "pallas")


class BTT(StructuredLinear):
  kind = "btt"

  def __init__(self, d_in: int, d_out: int, *, rank: int = 1, impl: str = "xla",
               use_bias: bool = False, role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    self._build(*factorize(d_in, 2), *factorize(d_out, 2), rank, impl, rngs)

  def _build(self, m1: int, m2: int, n1: int, n2: int, rank: int, impl: str, rngs: nnx.Rngs):
    """Cores for d_in = m1 m2 -> d_out = n1 n2 at ``rank``, contracted by ``impl``."""
    if impl not in IMPLS:
      raise StructureError(f"{self.kind} impl='{impl}' is unknown; valid: {list(IMPLS)}")
    max_rank = min(m1, n2)
    if not 1 <= rank <= max_rank:
      raise StructureError(f"{self.kind} rank={rank} must be in [1, {max_rank}] for "
                           f"{self.d_in}->{self.d_out} (factors {m1}x{m2} -> {n1}x{n2}); higher "
                           "ranks add parameters without adding expressiveness")
    self.m1, self.m2, self.n1, self.n2, self.rank, self.impl = m1, m2, n1, n2, rank, impl
    r = rank
    self.w0 = init_core(rngs, (m2, m1, r, n1), m1, r * n1)
    self.w1 = init_core(rngs, (n1, m2, r, n2), r * m2, n2)

  def _matmul(self, x):
    if self.impl == "pallas":
      from pallas_kernels.btt import api   # optional fast path; falls back off TPU/GPU
      return api.btt(x, self.w0[...], self.w1[...])
    x_MxM = x.reshape(*x.shape[:-1], self.m2, self.m1)
    z = einsum("...ba,barn->...brn", x_MxM, self.w0[...]).astype(x.dtype)
    y = einsum("...brn,nbrc->...nc", z, self.w1[...])
    return y.reshape(*x.shape[:-1], self.d_out)

  def to_dense(self):
    w = jnp.einsum("barn,nbrc->banc", self.w0[...], self.w1[...])
    return w.reshape(self.d_in, self.d_out)

  def flops_per_token(self):
    return 2 * self.rank * (self.d_in * self.n1 + self.d_out * self.m2)

  def cores(self):
    return (Core("w0", self.m1, self.rank * self.n1), Core("w1", self.rank * self.m2, self.n2))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """Closed form: the rank-r truncated SVD of each (b, n) slab W[b, :, n, :] is optimal."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    r = layer.rank
    slabs = w_IxO.reshape(layer.m2, layer.m1, layer.n1, layer.n2).transpose(0, 2, 1, 3)
    u, s, vt = jnp.linalg.svd(slabs, full_matrices=False)   # [m2, n1, m1, k], [.., k], [.., k, n2]
    root_s = jnp.sqrt(s[..., :r])
    layer.w0[...] = (u[..., :r] * root_s[..., None, :]).transpose(0, 2, 3, 1)       # [m2, m1, r, n1]
    layer.w1[...] = (root_s[..., None] * vt[..., :r, :]).transpose(1, 0, 2, 3)      # [n1, m2, r, n2]
    return layer
