"""Fused 2-core BTT kernels for TPU: both stages per token tile, the intermediate kept in VMEM.

Kernel weight layouts (from the layer's w0[B, A, R, J], w1[J, B, R, C]; letters as reference.py):
  u[b, r, j, a] = w0[b, a, r, j]   (stage 1: per input block b and rank r, a map A -> J)
  v[j, r, b, c] = w1[j, b, r, c]   (stage 2: per output block j and rank r, a map B -> C)
Stage 1 writes z feature-major, zs[r, b, j, t], one contiguous [J, T] tile per (r, b). Stage 2
reads the strided slice zs[r, :, j, :] = [B, T] for output block j: that strided read *is* the
BTT permutation, done in VMEM instead of as a transpose through HBM.

The layouts are symmetric: the input gradient is the same forward kernel run on dy with (u, v)
swapped, and the weight-gradient kernel reuses stage 1 on x and on dy. Every matmul is a 2-D
``backend.dot`` on static ref slices, so one body serves Mosaic TPU and the interpreter.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels import backend

TILE = 256   # default token tile: the lane dim of the scratch, a multiple of 128


def _stage1(x_ref, u_ref, zs_ref):
  """zs[r, b, j, t] = sum_a u[b, r, j, a] x[t, b*A + a]."""
  n_b, n_r, _, a = u_ref.shape
  for b in range(n_b):
    x_TxA = x_ref[:, b * a:(b + 1) * a]
    for r in range(n_r):
      zs_ref[r, b] = backend.dot(u_ref[b, r], x_TxA, ((1,), (1,))).astype(zs_ref.dtype)


def _fwd_kernel(x_ref, u_ref, v_ref, y_ref, zs_ref):
  _stage1(x_ref, u_ref, zs_ref)
  n_j, n_r, _, c = v_ref.shape
  for j in range(n_j):
    y_TxC = sum(backend.dot(zs_ref[r, :, j, :], v_ref[j, r], ((0,), (0,))) for r in range(n_r))
    y_ref[:, j * c:(j + 1) * c] = y_TxC.astype(y_ref.dtype)


def _accumulate_outer(zs_ref, y_ref, dv_ref):
  """dv[j, r] += zs[r, :, j, :] @ y[:, j*C:(j+1)*C] (the gradient of a stage-2 map)."""
  n_j, n_r, _, c = dv_ref.shape
  for j in range(n_j):
    y_TxC = y_ref[:, j * c:(j + 1) * c]
    for r in range(n_r):
      dv_ref[j, r] += backend.dot(zs_ref[r, :, j, :], y_TxC, ((1,), (0,)))


def _wgrad_kernel(x_ref, g_ref, u_ref, v_ref, du_ref, dv_ref, zs_ref, dzs_ref):
  @pl.when(pl.program_id(1) == 0)
  def _():
    du_ref[...] = jnp.zeros_like(du_ref)
    dv_ref[...] = jnp.zeros_like(dv_ref)

  _stage1(x_ref, u_ref, zs_ref)      # z, recomputed rather than stored by the forward pass
  _stage1(g_ref, v_ref, dzs_ref)     # dz[t, b, r, j] = dzs[r, j, b, t]
  _accumulate_outer(zs_ref, g_ref, dv_ref)
  _accumulate_outer(dzs_ref, x_ref, du_ref)


def _full(shape, grid_rank):
  zeros = (0,) * len(shape)
  return pl.BlockSpec(shape, (lambda i: zeros) if grid_rank == 1 else (lambda p, s: zeros))


def _btt(x_NxI, u_BxRxJxA, v_JxRxBxC, *, tile: int, route: backend.Route):
  """y[N, J*C] in x's dtype; N a multiple of ``tile``; u, v already in x's dtype."""
  n, d_in = x_NxI.shape
  n_b, n_r, n_j, _ = u_BxRxJxA.shape
  d_out = n_j * v_JxRxBxC.shape[-1]
  return backend.pallas_call(
      _fwd_kernel, route=route, semantics=("parallel",),
      grid=(n // tile,),
      in_specs=[pl.BlockSpec((tile, d_in), lambda i: (i, 0)),
                _full(u_BxRxJxA.shape, 1), _full(v_JxRxBxC.shape, 1)],
      out_specs=pl.BlockSpec((tile, d_out), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((n, d_out), x_NxI.dtype),
      scratch_shapes=[backend.scratch((n_r, n_b, n_j, tile), x_NxI.dtype)],
  )(x_NxI, u_BxRxJxA, v_JxRxBxC)


def _weight_grads(x_NxI, g_NxO, u_BxRxJxA, v_JxRxBxC, *, tile: int, route: backend.Route):
  """(du, dv) in float32, shaped like u and v, summed over all N tokens."""
  n, d_in = x_NxI.shape
  d_out = g_NxO.shape[1]
  n_b, n_r, n_j, _ = u_BxRxJxA.shape
  partials, steps = backend.split_tiles(n // tile, 2)   # 2 TensorCores on megacore chips
  tokens = lambda p, s: (p * steps + s, 0)
  partial = lambda shape: pl.BlockSpec((None, *shape), lambda p, s: (p,) + (0,) * len(shape))
  du, dv = backend.pallas_call(
      _wgrad_kernel, route=route, semantics=("parallel", "arbitrary"),
      grid=(partials, steps),
      in_specs=[pl.BlockSpec((tile, d_in), tokens), pl.BlockSpec((tile, d_out), tokens),
                _full(u_BxRxJxA.shape, 2), _full(v_JxRxBxC.shape, 2)],
      out_specs=[partial(u_BxRxJxA.shape), partial(v_JxRxBxC.shape)],
      out_shape=[jax.ShapeDtypeStruct((partials, *u_BxRxJxA.shape), jnp.float32),
                 jax.ShapeDtypeStruct((partials, *v_JxRxBxC.shape), jnp.float32)],
      scratch_shapes=[backend.scratch((n_r, n_b, n_j, tile), x_NxI.dtype),
                      backend.scratch((n_r, n_j, n_b, tile), x_NxI.dtype)],
  )(x_NxI, g_NxO, u_BxRxJxA, v_JxRxBxC)
  return du.sum(0), dv.sum(0)


def _layout(w0, w1, dtype):
  """u[b, r, j, a] = w0[b, a, r, j] and v[j, r, b, c] = w1[j, b, r, c]."""
  return w0.astype(dtype).transpose(0, 2, 3, 1), w1.astype(dtype).transpose(0, 2, 1, 3)


def forward(x_NxI, w0, w1, *, tile: int, route: backend.Route):
  return _btt(x_NxI, *_layout(w0, w1, x_NxI.dtype), tile=tile, route=route)


def backward(x_NxI, w0, w1, g_NxO, *, tile: int, route: backend.Route):
  """(dx, dw0, dw1): dx is the forward kernel with (u, v) swapped."""
  u, v = _layout(w0, w1, x_NxI.dtype)
  dx = _btt(g_NxO, v, u, tile=tile, route=route)
  du, dv = _weight_grads(x_NxI, g_NxO, u, v, tile=tile, route=route)
  return dx, du.transpose(0, 3, 1, 2), dv.transpose(0, 2, 1, 3)
