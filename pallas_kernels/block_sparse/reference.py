"""Pure-jnp block-sparse matmul: the semantics the kernel must match.

y[..., d_out] = sum_k x[..., rows[k] block] @ blocks[k], added into output block cols[k], with
blocks[K, b_in, b_out]. Params are cast to x's dtype, products accumulate in float32, y is
returned in x's dtype. Output blocks no stored block maps to are zero.
"""

import jax
import jax.numpy as jnp


def block_sparse_matmul(x: jax.Array, blocks_KxIxO: jax.Array, rows: tuple[int, ...],
                        cols: tuple[int, ...], d_out: int) -> jax.Array:
  _, b_in, b_out = blocks_KxIxO.shape
  x_NxKxI = x.reshape(-1, x.shape[-1] // b_in, b_in)[:, jnp.asarray(rows, jnp.int32)]
  blocks_KxIxO = blocks_KxIxO.astype(x.dtype)
  if x.dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
    # XLA:CPU has no bf16 x bf16 -> f32 dot in this layout; bf16 products are exact in f32
    # (the rule of structured.backend.cast_for_dot, which pallas_kernels may not import)
    x_NxKxI, blocks_KxIxO = x_NxKxI.astype(jnp.float32), blocks_KxIxO.astype(jnp.float32)
  # the product in its operands' dtype, summed into float32 (a float32 product would make the
  # backward's dots mixed-dtype: float32 GEMMs on XLA:GPU, see structured.backend.cast_for_dot)
  y_NxKxO = jnp.einsum("nki,kio->nko", x_NxKxI, blocks_KxIxO, preferred_element_type=x_NxKxI.dtype)
  y_NxCxO = jnp.zeros((x_NxKxI.shape[0], d_out // b_out, b_out), jnp.float32)
  y_NxCxO = y_NxCxO.at[:, jnp.asarray(cols, jnp.int32)].add(y_NxKxO)
  return y_NxCxO.astype(x.dtype).reshape(*x.shape[:-1], d_out)
