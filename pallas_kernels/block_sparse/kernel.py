"""Block-sparse matmul kernels with a static block list: only the K stored blocks are computed.

The block list (rows, cols) is static Python, so each output block's contributing blocks are
known at trace time: the forward kernel unrolls, per token tile, one 2-D dot per stored block,
summed per output block, and writes zeros where no block lands. No scalar prefetch is needed,
so the same body runs on Mosaic TPU and in the interpreter. The input gradient is the same
kernel with (rows, cols) swapped and the blocks transposed; the block gradients accumulate
x_block^T @ dy_block over token tiles.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels import backend

TILE = 256   # default token tile


def _fwd_kernel(x_ref, blocks_ref, y_ref, *, rows, cols):
  _, b_in, b_out = blocks_ref.shape
  for c in range(y_ref.shape[1] // b_out):
    terms = [backend.dot(x_ref[:, r * b_in:(r + 1) * b_in], blocks_ref[k], ((1,), (0,)))
             for k, (r, kc) in enumerate(zip(rows, cols)) if kc == c]
    y_TxO = sum(terms) if terms else jnp.zeros((y_ref.shape[0], b_out), jnp.float32)
    y_ref[:, c * b_out:(c + 1) * b_out] = y_TxO.astype(y_ref.dtype)


def _wgrad_kernel(x_ref, g_ref, dblocks_ref, *, rows, cols):
  @pl.when(pl.program_id(1) == 0)
  def _():
    dblocks_ref[...] = jnp.zeros_like(dblocks_ref)

  _, b_in, b_out = dblocks_ref.shape
  for k, (r, c) in enumerate(zip(rows, cols)):
    dblocks_ref[k] += backend.dot(x_ref[:, r * b_in:(r + 1) * b_in],
                                  g_ref[:, c * b_out:(c + 1) * b_out], ((0,), (0,)))


def block_sparse_matmul(x_NxI, blocks_KxIxO, rows, cols, d_out, *, tile: int, route: backend.Route):
  """y[N, d_out] in x's dtype; N a multiple of ``tile``; blocks already in x's dtype."""
  n, d_in = x_NxI.shape
  return backend.pallas_call(
      lambda *refs: _fwd_kernel(*refs, rows=rows, cols=cols), route=route, semantics=("parallel",),
      grid=(n // tile,),
      in_specs=[pl.BlockSpec((tile, d_in), lambda i: (i, 0)),
                pl.BlockSpec(blocks_KxIxO.shape, lambda i: (0, 0, 0))],
      out_specs=pl.BlockSpec((tile, d_out), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((n, d_out), x_NxI.dtype),
  )(x_NxI, blocks_KxIxO)


def block_grads(x_NxI, g_NxO, rows, cols, b_in, b_out, *, tile: int, route: backend.Route):
  """dblocks[K, b_in, b_out] in float32, summed over all N tokens."""
  n, d_in = x_NxI.shape
  partials, steps = backend.split_tiles(n // tile, 2)   # 2 TensorCores on megacore chips
  tokens = lambda p, s: (p * steps + s, 0)
  shape = (len(rows), b_in, b_out)
  dblocks = backend.pallas_call(
      lambda *refs: _wgrad_kernel(*refs, rows=rows, cols=cols), route=route,
      semantics=("parallel", "arbitrary"),
      grid=(partials, steps),
      in_specs=[pl.BlockSpec((tile, d_in), tokens), pl.BlockSpec((tile, g_NxO.shape[1]), tokens)],
      out_specs=pl.BlockSpec((None, *shape), lambda p, s: (p, 0, 0, 0)),
      out_shape=jax.ShapeDtypeStruct((partials, *shape), jnp.float32),
  )(x_NxI, g_NxO)
  return dblocks.sum(0)
