"""``btt(x, w0, w1)``: the 2-core Block Tensor-Train contraction as Pallas kernels, differentiable.

Same semantics as ``structured/btt.py`` and ``reference.btt`` (Monarch is the rank-1 case):
d_in = m1*m2, d_out = n1*n2, w0[m2, m1, r, n1], w1[n1, m2, r, n2]. Computes in x's dtype with
float32 accumulation; params are cast to x's dtype and their gradients returned in their dtype.
Bodies: ``kernel.py`` (TPU, fused: z stays in VMEM) and ``kernel_triton.py`` (GPU, two passes:
z goes through HBM once, written pre-permuted); see ``backend`` for how one is chosen.

FLOPs per token (1 multiply-add = 2): forward 2 r (d_in n1 + d_out m2), i.e. stage 1 plus stage 2.
The backward costs 2x that in model FLOPs (input gradient, weight gradients); both bodies also
recompute z (stage 1) instead of saving it, which is executed but not counted.
"""

import functools

import jax

from pallas_kernels import backend
from pallas_kernels.btt import kernel, kernel_triton, reference

BODIES = {"tpu": kernel, "gpu": kernel_triton}


def btt(x: jax.Array, w0: jax.Array, w1: jax.Array, *, interpret: bool | None = None,
        block_tokens: int | None = None) -> jax.Array:
  """y[..., n1*n2] from x[..., m1*m2]; ``block_tokens`` overrides the token tile (multiple of 8)."""
  m2, m1, r, n1 = w0.shape
  if w1.shape[:3] != (n1, m2, r) or x.shape[-1] != m1 * m2:
    raise ValueError(f"btt shapes do not chain: x {x.shape}, w0 {w0.shape} (m2, m1, r, n1), "
                     f"w1 {w1.shape} (n1, m2, r, n2)")
  route = backend.route(interpret)
  if route.body is None:
    backend.warn_fallback("btt", f"no kernel for backend '{jax.default_backend()}'")
    return reference.btt(x, w0, w1)
  body = BODIES[route.body]
  x_NxI, tile = backend.token_rows(x, block_tokens, body.TILE)
  if body is kernel_triton and not route.interpret and not kernel_triton.supports(w0, w1, tile):
    backend.warn_fallback("btt", f"Triton cannot tile w0 {w0.shape}, w1 {w1.shape}, {tile} tokens")
    return reference.btt(x, w0, w1)
  y_NxO = _btt(route, tile, x_NxI, w0, w1)
  return y_NxO[:x.size // x.shape[-1]].reshape(*x.shape[:-1], y_NxO.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _btt(route, tile, x_NxI, w0, w1):
  return BODIES[route.body].forward(x_NxI, w0, w1, tile=tile, route=route)


def _btt_fwd(route, tile, x_NxI, w0, w1):
  return _btt(route, tile, x_NxI, w0, w1), (x_NxI, w0, w1)


def _btt_bwd(route, tile, residuals, g_NxO):
  x_NxI, w0, w1 = residuals
  dx, dw0, dw1 = BODIES[route.body].backward(x_NxI, w0, w1, g_NxO.astype(x_NxI.dtype),
                                             tile=tile, route=route)
  return dx, dw0.astype(w0.dtype), dw1.astype(w1.dtype)


_btt.defvjp(_btt_fwd, _btt_bwd)
