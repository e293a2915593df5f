"""Low-rank: W = U V with U [d_in, r], V [r, d_out]; params = FLOPs/2 = r (d_in + d_out)."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import (Core, StructuredLinear, StructureError, check_fraction, check_int,
                             init_core, matmul)


def resolve_rank(d_in: int, d_out: int, rank: int | None, rank_frac: float | None) -> int:
  """The rank from an absolute ``rank`` or a fraction of min(d_in, d_out) (rounded up)."""
  limit = min(d_in, d_out)
  if (rank is None) == (rank_frac is None):
    raise StructureError(f"low_rank rank={rank!r}, rank_frac={rank_frac!r}: give exactly one of "
                         "rank (int >= 1) or rank_frac (in (0, 1])")
  if rank_frac is not None:
    rank = math.ceil(check_fraction("low_rank", "rank_frac", rank_frac) * limit)
  return check_int("low_rank", "rank", rank, 1, limit, "min(d_in, d_out)")


def svd_split(w_IxO: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
  """(U sqrt(s), sqrt(s) V^T) of the rank-``rank`` truncated SVD of ``w`` (batched over leading
  axes): the Eckart-Young optimum as a factor pair with the singular values split evenly, the
  start or step of every projection that fits a low-rank term."""
  u, s, vt = jnp.linalg.svd(w_IxO, full_matrices=False)
  root_s = jnp.sqrt(s[..., :rank])
  return u[..., :rank] * root_s[..., None, :], root_s[..., :, None] * vt[..., :rank, :]


class LowRank(StructuredLinear):
  kind = "low_rank"

  def __init__(self, d_in: int, d_out: int, *, rank: int | None = None,
               rank_frac: float | None = None, use_bias: bool = False, role: str = "hidden",
               rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    if rank is None and rank_frac is None:
      rank = 1
    self.rank = resolve_rank(d_in, d_out, rank, rank_frac)
    self.u = init_core(rngs, (d_in, self.rank), d_in, self.rank)
    self.v = init_core(rngs, (self.rank, d_out), self.rank, d_out)

  def _matmul(self, x):
    z = matmul(x, self.u[...]).astype(x.dtype)
    return matmul(z, self.v[...])

  def to_dense(self):
    return self.u[...] @ self.v[...]

  def flops_per_token(self):
    return 2 * self.rank * (self.d_in + self.d_out)

  def cores(self):
    return (Core("u", self.d_in, self.rank), Core("v", self.rank, self.d_out))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """Truncated SVD: the Eckart-Young optimum in Frobenius and spectral norm."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    layer.u[...], layer.v[...] = svd_split(w_IxO, layer.rank)
    return layer
