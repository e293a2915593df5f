"""Two-pass 2-core BTT kernels for GPU (Pallas Triton backend).

The Triton backend has no scratch memory and cannot slice register values, so the fused TPU body
(kernel.py) does not lower. Here the intermediate makes one round trip through HBM, written
already permuted so no transpose op runs:
  pass 1 (grid: token tiles x input blocks b): zt[j, b*R + r, t] = sum_a u[b, j, r, a] x[t, b*A + a],
         each program storing J*R rows of TN contiguous tokens (coalesced);
  pass 2 (grid: token tiles x output blocks j): y[t, j*C + c] = sum_k zt[j, k, t] v[j, k, c],
         reading one contiguous [B*R, TN] slab per program.
Layouts: u[b, j, r, a] = w0[b, a, r, j] and v[j, (b, r), c] = w1[j, b, r, c] (w1 itself). As in
kernel.py they are symmetric: the input gradient is the same two passes on dy with the roles of
w0 and w1 swapped, and each weight gradient is one sum over tokens of zt-slab x activation.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import backend

TILE = 64   # default token tile
WGRAD_PROGRAMS = 256   # aim for ~2 programs per H100 SM in the weight-gradient grid


def supports(w0, w1, tile: int) -> bool:
  """Triton tiles are powers of two, and its dots need every dim >= 16."""
  b, a, r, j = w0.shape
  c = w1.shape[-1]
  pow2 = lambda *ns: all(n & (n - 1) == 0 for n in ns)
  return pow2(b, a, r, j, c, tile) and min(a, c, j * r, b * r, tile) >= 16


def _pass1_kernel(x_ref, u_ref, zt_ref):
  n_j, n_r, a = u_ref.shape
  zt = backend.dot(u_ref[...].reshape(n_j * n_r, a), x_ref[...], ((1,), (1,)))
  zt_ref[...] = zt.astype(zt_ref.dtype).reshape(zt_ref.shape)


def _pass1(x_NxI, u_BxJxRxA, *, tile, route):
  """zt[J, B*R, N] in x's dtype."""
  n = x_NxI.shape[0]
  n_b, n_j, n_r, a = u_BxJxRxA.shape
  return backend.pallas_call(
      _pass1_kernel, route=route, semantics=("parallel", "parallel"),
      grid=(n // tile, n_b),
      in_specs=[pl.BlockSpec((tile, a), lambda t, b: (t, b)),
                pl.BlockSpec((None, n_j, n_r, a), lambda t, b: (b, 0, 0, 0))],
      out_specs=pl.BlockSpec((n_j, n_r, tile), lambda t, b: (0, b, t)),
      out_shape=jax.ShapeDtypeStruct((n_j, n_b * n_r, n), x_NxI.dtype),
  )(x_NxI, u_BxJxRxA)


def _pass2_kernel(zt_ref, v_ref, y_ref):
  y_ref[...] = backend.dot(zt_ref[...], v_ref[...], ((0,), (0,))).astype(y_ref.dtype)


def _pass2(zt_JxKxN, v_JxKxC, *, tile, route):
  """y[N, J*C] in zt's dtype."""
  n_j, k, n = zt_JxKxN.shape
  c = v_JxKxC.shape[-1]
  return backend.pallas_call(
      _pass2_kernel, route=route, semantics=("parallel", "parallel"),
      grid=(n // tile, n_j),
      in_specs=[pl.BlockSpec((None, k, tile), lambda t, j: (j, 0, t)),
                pl.BlockSpec((None, k, c), lambda t, j: (j, 0, 0))],
      out_specs=pl.BlockSpec((tile, c), lambda t, j: (t, j)),
      out_shape=jax.ShapeDtypeStruct((n, n_j * c), zt_JxKxN.dtype),
  )(zt_JxKxN, v_JxKxC)


def _outer_kernel(zt_ref, y_ref, dv_ref, *, tile, steps):
  def step(s, acc):
    rows = pl.ds(pl.multiple_of(s * tile, tile), tile)
    return acc + backend.dot(zt_ref[:, rows], y_ref[rows, :], ((1,), (0,)))
  dv_ref[...] = lax.fori_loop(0, steps, step, jnp.zeros(dv_ref.shape, jnp.float32))


def _outer(zt_JxKxN, y_NxO, *, tile, route):
  """dv[j, k, c] = sum_t zt[j, k, t] y[t, j*C + c], float32; grid: output blocks x token chunks."""
  n_j, k, n = zt_JxKxN.shape
  c = y_NxO.shape[1] // n_j
  partials, steps = backend.split_tiles(n // tile, max(1, WGRAD_PROGRAMS // n_j))
  chunk = steps * tile
  dv = backend.pallas_call(
      lambda *refs: _outer_kernel(*refs, tile=tile, steps=steps), route=route,
      semantics=("parallel", "parallel"),
      grid=(n_j, partials),
      in_specs=[pl.BlockSpec((None, k, chunk), lambda j, p: (j, 0, p)),
                pl.BlockSpec((chunk, c), lambda j, p: (p, j))],
      out_specs=pl.BlockSpec((None, None, k, c), lambda j, p: (p, j, 0, 0)),
      out_shape=jax.ShapeDtypeStruct((partials, n_j, k, c), jnp.float32),
  )(zt_JxKxN, y_NxO)
  return dv.sum(0)


def forward(x_NxI, w0, w1, *, tile: int, route: backend.Route):
  u = w0.astype(x_NxI.dtype).transpose(0, 3, 2, 1)
  v = w1.astype(x_NxI.dtype).reshape(w1.shape[0], -1, w1.shape[-1])
  return _pass2(_pass1(x_NxI, u, tile=tile, route=route), v, tile=tile, route=route)


def backward(x_NxI, w0, w1, g_NxO, *, tile: int, route: backend.Route):
  """(dx, dw0, dw1); z is recomputed by pass 1 rather than saved by the forward."""
  n_b, a, n_r, n_j = w0.shape
  u = w0.astype(x_NxI.dtype).transpose(0, 3, 2, 1)                 # [B, J, R, A]
  w1 = w1.astype(x_NxI.dtype)                                      # [J, B, R, C]
  zt = _pass1(x_NxI, u, tile=tile, route=route)                    # z[t, b, r, j] at [j, (b, r), t]
  dzt = _pass1(g_NxO, w1, tile=tile, route=route)                  # dz[t, b, r, j] at [b, (j, r), t]
  dx = _pass2(dzt, u.reshape(n_b, n_j * n_r, a), tile=tile, route=route)
  du = _outer(dzt, x_NxI, tile=tile, route=route)                  # [B, (J, R), A]
  dv = _outer(zt, g_NxO, tile=tile, route=route)                   # [J, (B, R), C]
  return dx, du.reshape(n_b, n_j, n_r, a).transpose(0, 3, 2, 1), dv.reshape(w1.shape)
