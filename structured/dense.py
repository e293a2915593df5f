"""Dense baseline: one [d_in, d_out] matrix."""

import jax
from flax import nnx

from structured.base import Core, StructuredLinear, init_core, matmul


class Dense(StructuredLinear):
  kind = "dense"

  def __init__(self, d_in: int, d_out: int, *, use_bias: bool = False, role: str = "hidden",
               rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    self.w = init_core(rngs, (d_in, d_out), d_in, d_out)

  def _matmul(self, x):
    return matmul(x, self.w[...])

  def to_dense(self):
    return self.w[...]

  def flops_per_token(self):
    return 2 * self.d_in * self.d_out

  def cores(self):
    return (Core("w", self.d_in, self.d_out),)

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    layer.w[...] = w_IxO
    return layer
