"""``btt(x, w0, w1)``: the fused 2-core Block Tensor-Train contraction, differentiable.

Same semantics as ``structured/btt.py`` and ``reference.btt`` (Monarch is the rank-1 case):
d_in = m1*m2, d_out = n1*n2, w0[m2, m1, r, n1], w1[n1, m2, r, n2]. Computes in x's dtype with
float32 accumulation; params are cast to x's dtype and their gradients returned in their dtype.

FLOPs per token (1 multiply-add = 2): forward 2 r (d_in n1 + d_out m2), i.e. stage 1 plus stage 2.
The backward costs 3x that: the input gradient (both stages again, transposed) and the weight
gradients, which also recompute z instead of saving it (so 4x the forward in executed FLOPs,
of which benchmarks count the model's 3x).
"""

import functools

import jax

from pallas_kernels import backend
from pallas_kernels.btt import kernel, reference


def btt(x: jax.Array, w0: jax.Array, w1: jax.Array, *, interpret: bool | None = None,
        block_tokens: int | None = None) -> jax.Array:
  """y[..., n1*n2] from x[..., m1*m2]; ``block_tokens`` overrides the token tile (multiple of 8)."""
  m2, m1, r, n1 = w0.shape
  if w1.shape[:3] != (n1, m2, r) or x.shape[-1] != m1 * m2:
    raise ValueError(f"btt shapes do not chain: x {x.shape}, w0 {w0.shape} (m2, m1, r, n1), "
                     f"w1 {w1.shape} (n1, m2, r, n2)")
  route = backend.route(interpret, "btt")
  if route == "reference":
    return reference.btt(x, w0, w1)
  x_NxI, tile = backend.token_rows(x, block_tokens)
  y_NxO = _btt(route, tile, x_NxI, w0, w1)
  return y_NxO[:x.size // x.shape[-1]].reshape(*x.shape[:-1], y_NxO.shape[-1])


def _kernel_layout(w0, w1, dtype):
  """u[b, r, j, a] = w0[b, a, r, j] and v[j, r, b, c] = w1[j, b, r, c] (see kernel.py)."""
  return w0.astype(dtype).transpose(0, 2, 3, 1), w1.astype(dtype).transpose(0, 2, 1, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _btt(route, tile, x_NxI, w0, w1):
  u, v = _kernel_layout(w0, w1, x_NxI.dtype)
  return kernel.btt(x_NxI, u, v, tile=tile, route=route)


def _btt_fwd(route, tile, x_NxI, w0, w1):
  return _btt(route, tile, x_NxI, w0, w1), (x_NxI, w0, w1)


def _btt_bwd(route, tile, residuals, g_NxO):
  x_NxI, w0, w1 = residuals
  u, v = _kernel_layout(w0, w1, x_NxI.dtype)
  g_NxO = g_NxO.astype(x_NxI.dtype)
  dx = kernel.btt(g_NxO, v, u, tile=tile, route=route)   # the transposed BTT: (u, v) swapped
  du, dv = kernel.btt_weight_grads(x_NxI, g_NxO, u, v, tile=tile, route=route)
  return dx, du.transpose(0, 3, 1, 2).astype(w0.dtype), dv.transpose(0, 2, 1, 3).astype(w1.dtype)


_btt.defvjp(_btt_fwd, _btt_bwd)
