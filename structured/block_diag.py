"""Block-diagonal: W = diag(B_1, ..., B_k), B_i: [d_in/k, d_out/k].

Block i maps input features [i p, (i+1) p) to output features [i q, (i+1) q) with
p = d_in/k, q = d_out/k; params = FLOPs/2 = d_in d_out / k. Widths must be divisible by k
(no silent padding). Projection keeps the diagonal blocks, the Frobenius optimum.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import (Core, StructuredLinear, StructureError, bmm, check_int, einsum,
                             init_core, nearest_valid)


class BlockDiag(StructuredLinear):
  kind = "block_diag"

  def __init__(self, d_in: int, d_out: int, *, blocks: int = 4, use_bias: bool = False,
               role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    blocks = check_int(self.kind, "blocks", blocks, 1)
    for name, d in (("d_in", d_in), ("d_out", d_out)):
      if d % blocks:
        raise StructureError(f"block_diag with blocks={blocks} needs {name}={d} divisible by "
                             f"{blocks}; nearest valid widths: "
                             f"{nearest_valid(d, lambda w: w % blocks == 0)}")
    self.blocks = blocks
    p, q = d_in // blocks, d_out // blocks
    self.w = init_core(rngs, (blocks, p, q), p, q)

  def _matmul(self, x):
    # blocks lead (a batched matmul over k): XLA:CPU rejects the bf16 x bf16 -> f32 dot that
    # einsum('...kp,kpq->...kq') lowers to
    x_KxNxP = jnp.moveaxis(x.reshape(-1, self.blocks, self.d_in // self.blocks), 1, 0)
    y_KxNxQ = bmm(x_KxNxP, self.w[...])
    return jnp.moveaxis(y_KxNxQ, 0, 1).reshape(*x.shape[:-1], self.d_out)

  def to_dense(self):
    w_KxPxQ = self.w[...]
    eye = jnp.eye(self.blocks, dtype=w_KxPxQ.dtype)
    return jnp.einsum("kpq,kl->kplq", w_KxPxQ, eye).reshape(self.d_in, self.d_out)

  def flops_per_token(self):
    return 2 * self.d_in * self.d_out // self.blocks

  def cores(self):
    return (Core("w", self.d_in // self.blocks, self.d_out // self.blocks),)

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """The diagonal blocks of W: the nearest block-diagonal matrix in Frobenius norm."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    k = layer.blocks
    w_KxPxKxQ = w_IxO.reshape(k, w_IxO.shape[0] // k, k, w_IxO.shape[1] // k)
    layer.w[...] = jnp.einsum("kpkq->kpq", w_KxPxKxQ)
    return layer
