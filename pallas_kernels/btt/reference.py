"""Pure-jnp 2-core Block Tensor-Train contraction: the semantics the kernel must match.

Letters: B = m2 input blocks of A = m1 features (x viewed as x[..., B, A]), rank R, J = n1 output
blocks of C = n2 features (y viewed as y[..., J, C]).
  z[..., b, r, j] = sum_a x[..., b, a] w0[b, a, r, j]          (stage 1, z in x's dtype)
  y[..., j, c]    = sum_{b, r} z[..., b, r, j] w1[j, b, r, c]  (stage 2)
Params are cast to x's dtype, products accumulate in float32 (as the matrix units do), z and y
are returned in x's dtype.
"""

import jax
import jax.numpy as jnp


def btt(x: jax.Array, w0_BxAxRxJ: jax.Array, w1_JxBxRxC: jax.Array) -> jax.Array:
  b, a, _, j = w0_BxAxRxJ.shape
  c = w1_JxBxRxC.shape[-1]
  x_NxBxA = x.reshape(-1, b, a)
  # results in x's dtype: a float32 result would make the backward's dots mixed-dtype, which
  # XLA:GPU runs as float32 GEMMs (structured.backend.cast_for_dot)
  z_NxBxRxJ = jnp.einsum("tba,barj->tbrj", x_NxBxA, w0_BxAxRxJ.astype(x.dtype),
                         preferred_element_type=x.dtype)
  y_NxJxC = jnp.einsum("tbrj,jbrc->tjc", z_NxBxRxJ, w1_JxBxRxC.astype(x.dtype),
                       preferred_element_type=x.dtype)
  return y_NxJxC.reshape(*x.shape[:-1], j * c)
