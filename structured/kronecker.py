"""Kronecker product of c factors: W = A_1 (x) A_2 (x) ... (x) A_c, A_k: [a_k, b_k].

d_in = prod a_k, d_out = prod b_k (balanced factorizations). The input is viewed as a
tensor x[a_1, ..., a_c] and contracted one mode at a time, so the FLOPs (2 per MAC) are
sum_k prod(b_1..b_k) prod(a_k..a_c), e.g. 2 (d_in b_2 + a_1 d_out) for two factors, while
params are only sum_k a_k b_k: FLOPs and parameters diverge. Projection (2 factors): the
Van Loan-Pitsianis rearrangement and its best rank-1 SVD.
"""

import math
import string

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import Core, StructuredLinear, StructureError, einsum, factorize, init_core


class Kronecker(StructuredLinear):
  kind = "kronecker"

  def __init__(self, d_in: int, d_out: int, *, factors: int = 2, use_bias: bool = False,
               role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    if factors < 2:
      raise StructureError(f"kronecker factors={factors} must be >= 2")
    self.a, self.b = factorize(d_in, factors), factorize(d_out, factors)
    for k, (a, b) in enumerate(zip(self.a, self.b)):
      setattr(self, f"f{k}", init_core(rngs, (a, b), a, b))

  @property
  def _factors(self) -> list[jax.Array]:
    return [getattr(self, f"f{k}")[...] for k in range(len(self.a))]

  def _matmul(self, x):
    lead = x.shape[:-1]
    t = x.reshape(-1, *self.a)
    letters = string.ascii_letters[: len(self.a)]
    for k, factor in enumerate(self._factors):
      src = "Z" + letters
      dst = src.replace(letters[k], "Y")
      t = einsum(f"{src},{letters[k]}Y->{dst}", t.astype(x.dtype), factor)
    return t.reshape(*lead, self.d_out)

  def to_dense(self):
    w, *rest = self._factors
    for factor in rest:
      w = jnp.kron(w, factor)
    return w

  def flops_per_token(self):
    return 2 * sum(math.prod(self.b[: k + 1]) * math.prod(self.a[k:]) for k in range(len(self.a)))

  def cores(self):
    return tuple(Core(f"f{k}", a, b) for k, (a, b) in enumerate(zip(self.a, self.b)))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """Van Loan-Pitsianis: W ~ A (x) B is a rank-1 problem after rearranging W's blocks."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    if len(layer.a) != 2:
      raise StructureError("kronecker projection is implemented for 2 factors only (Van Loan-"
                           "Pitsianis); use factors=2")
    (a1, a2), (b1, b2) = layer.a, layer.b
    r = w_IxO.reshape(a1, a2, b1, b2).transpose(0, 2, 1, 3).reshape(a1 * b1, a2 * b2)
    u, s, vt = jnp.linalg.svd(r, full_matrices=False)
    layer.f0[...] = (u[:, 0] * jnp.sqrt(s[0])).reshape(a1, b1)
    layer.f1[...] = (vt[0] * jnp.sqrt(s[0])).reshape(a2, b2)
    return layer
