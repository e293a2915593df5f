"""``block_sparse_matmul(x, blocks, rows, cols, d_out)``: static block-sparse matmul, differentiable.

Block k maps input block rows[k] (x[..., rows[k]*b_in:(rows[k]+1)*b_in]) through blocks[k] into
output block cols[k]; only the K stored blocks are computed. Computes in x's dtype with float32
accumulation; blocks are cast to x's dtype and their gradient returned in their dtype.
The kernel body is TPU-only (``kernel.py``); on GPU and CPU this falls back to the reference:
its block-gradient grid accumulates across sequential grid steps, which Triton does not have.

FLOPs per token (1 multiply-add = 2): forward 2 K b_in b_out, the stored blocks only; the backward
costs 2x that (input gradient and block gradients), 3x the forward in all.
"""

import functools

import jax

from pallas_kernels import backend
from pallas_kernels.block_sparse import kernel, reference


def block_sparse_matmul(x: jax.Array, blocks: jax.Array, rows: tuple[int, ...],
                        cols: tuple[int, ...], d_out: int, *, interpret: bool | None = None,
                        block_tokens: int | None = None) -> jax.Array:
  """y[..., d_out] from x[..., d_in]; ``block_tokens`` overrides the token tile (multiple of 8)."""
  rows, cols = tuple(map(int, rows)), tuple(map(int, cols))
  n_blocks, b_in, b_out = blocks.shape
  d_in = x.shape[-1]
  if d_in % b_in or d_out % b_out:
    raise ValueError(f"block_sparse: block {b_in}x{b_out} must tile {d_in}x{d_out}")
  if not len(rows) == len(cols) == n_blocks:
    raise ValueError(f"block_sparse: {n_blocks} blocks need {n_blocks} rows and cols, got "
                     f"{len(rows)} and {len(cols)}")
  if not (all(0 <= r < d_in // b_in for r in rows) and all(0 <= c < d_out // b_out for c in cols)):
    raise ValueError(f"block_sparse: rows must be in [0, {d_in // b_in}) and cols in "
                     f"[0, {d_out // b_out}), got rows={rows} cols={cols}")
  route = backend.route(interpret)
  if route.body != "tpu" and not route.interpret:
    backend.warn_fallback("block_sparse", f"no kernel for backend '{jax.default_backend()}'")
    return reference.block_sparse_matmul(x, blocks, rows, cols, d_out)
  x_NxI, tile = backend.token_rows(x, block_tokens, kernel.TILE)
  y_NxO = _bsmm(rows, cols, d_out, route, tile, x_NxI, blocks)
  return y_NxO[:x.size // d_in].reshape(*x.shape[:-1], d_out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _bsmm(rows, cols, d_out, route, tile, x_NxI, blocks):
  return kernel.block_sparse_matmul(x_NxI, blocks.astype(x_NxI.dtype), rows, cols, d_out,
                                    tile=tile, route=route)


def _bsmm_fwd(rows, cols, d_out, route, tile, x_NxI, blocks):
  return _bsmm(rows, cols, d_out, route, tile, x_NxI, blocks), (x_NxI, blocks)


def _bsmm_bwd(rows, cols, d_out, route, tile, residuals, g_NxO):
  x_NxI, blocks = residuals
  g_NxO = g_NxO.astype(x_NxI.dtype)
  blocks_T = blocks.astype(x_NxI.dtype).transpose(0, 2, 1)
  dx = kernel.block_sparse_matmul(g_NxO, blocks_T, cols, rows, x_NxI.shape[1],
                                  tile=tile, route=route)
  dblocks = kernel.block_grads(x_NxI, g_NxO, rows, cols, *blocks.shape[1:], tile=tile, route=route)
  return dx, dblocks.astype(blocks.dtype)


_bsmm.defvjp(_bsmm_fwd, _bsmm_bwd)
