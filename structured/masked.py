"""Static sparsity masks: the ``Mask`` variable (nm_sparse.py) and the block-sparse storage and
contraction shared by block_sparse.py and pixelfly.py.

A block-sparse W[d_in, d_out] is tiled by b x b blocks on an [n_in, n_out] block grid
(n_in = d_in / b, n_out = d_out / b). Only its K kept blocks are stored, as ``blocks[K, b, b]``
with static Python block coordinates ``rows`` (input block) and ``cols`` (output block), sorted
by (col, row); pallas_kernels/block_sparse takes the same (blocks, rows, cols). The contraction gathers the K input
blocks, runs one batched matmul and sums the K partial outputs into their output blocks:
2 K b^2 multiply-add FLOPs plus K b adds for that sum, per token.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from structured.base import StructureError, check_int, einsum


class Mask(nnx.Variable):
  """A static boolean sparsity mask kept as state (checkpointed, sharded), never trained: not a
  Param, so optimizers and parameter counts skip it."""


def check_block(kind: str, d_in: int, d_out: int, block: int) -> int:
  """``block`` as an int, or a StructureError unless it tiles both widths, naming the blocks
  that do."""
  g = math.gcd(d_in, d_out)
  valid = [b for b in range(1, g + 1) if g % b == 0]
  why = f" dividing d_in={d_in} and d_out={d_out}; valid blocks: {valid}"
  block = check_int(kind, "block", block, 1, why=why)
  if d_in % block or d_out % block:
    raise StructureError(f"{kind} block={block} must divide d_in={d_in} and d_out={d_out}; "
                         f"valid blocks: {valid}")
  return block


def coords(mask_IxO: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(rows, cols) of the kept blocks of a boolean block mask, sorted by (col, row)."""
  cols, rows = np.nonzero(np.asarray(mask_IxO).T)
  return tuple(int(r) for r in rows), tuple(int(c) for c in cols)


def block_matmul(x: jax.Array, blocks_KxIxO: jax.Array, rows: tuple[int, ...],
                 cols: tuple[int, ...], d_out: int, acc: jax.Array | None = None) -> jax.Array:
  """``acc + x @ W`` for the block-sparse W, computing only the stored blocks (float32 result).

  ``acc`` ([..., d_out] float32, default zeros) is what the block outputs are summed into, so
  adding another branch costs no extra pass.
  """
  _, b_in, b_out = blocks_KxIxO.shape
  x_NxI = x.reshape(-1, x.shape[-1])
  n = x_NxI.shape[0]
  # block-major layout: the batched dot has its batch dim leading on both operands, the form
  # every backend runs (XLA:CPU's eager bf16 x bf16 -> f32 batched dot rejects n k i, k i o)
  x_KxNxI = x_NxI.reshape(n, -1, b_in).transpose(1, 0, 2)[np.asarray(rows)]
  y_KxNxO = einsum("kni,kio->kno", x_KxNxI, blocks_KxIxO)
  shape_CxNxO = (d_out // b_out, n, b_out)
  y_CxNxO = (jnp.zeros(shape_CxNxO, jnp.float32) if acc is None
             else acc.reshape(n, d_out // b_out, b_out).transpose(1, 0, 2))
  y_CxNxO = y_CxNxO.at[np.asarray(cols)].add(y_KxNxO, indices_are_sorted=True)
  return y_CxNxO.transpose(1, 0, 2).reshape(*x.shape[:-1], d_out)


def to_dense(blocks_KxIxO: jax.Array, rows: tuple[int, ...], cols: tuple[int, ...],
             d_in: int, d_out: int) -> jax.Array:
  """The [d_in, d_out] matrix: the stored blocks scattered into zeros."""
  _, b_in, b_out = blocks_KxIxO.shape
  grid = jnp.zeros((d_in // b_in, d_out // b_out, b_in, b_out), blocks_KxIxO.dtype)
  grid = grid.at[np.asarray(rows), np.asarray(cols)].set(blocks_KxIxO)
  return grid.transpose(0, 2, 1, 3).reshape(d_in, d_out)


def gather(w_IxO: jax.Array, rows: tuple[int, ...], cols: tuple[int, ...], block: int) -> jax.Array:
  """The [K, b, b] blocks of a dense matrix at (rows, cols)."""
  grid = w_IxO.reshape(w_IxO.shape[0] // block, block, w_IxO.shape[1] // block, block)
  return grid.transpose(0, 2, 1, 3)[np.asarray(rows), np.asarray(cols)]


def block_norms(w_IxO: jax.Array, block: int) -> np.ndarray:
  """Squared Frobenius norm of every block, [n_in, n_out]."""
  grid = np.asarray(w_IxO, np.float64).reshape(w_IxO.shape[0] // block, block, -1, block)
  return (grid**2).sum(axis=(1, 3))


def executed_flops(n_blocks: int, block: int) -> int:
  """FLOPs per token of ``block_matmul``: the block products plus the adds that sum them."""
  return 2 * n_blocks * block * block + n_blocks * block


def effective_fans(nnz: int, d_in: int, d_out: int) -> tuple[int, int]:
  """Mean inputs per output (fan-in) and outputs per input (fan-out) of a sparse matrix.

  A sparse matrix with nnz entries spread evenly acts like a dense one of these fans, which is
  what muP's init scale and learning-rate rule need (e.g. density * d_in for block_sparse).
  """
  return max(1, round(nnz / d_out)), max(1, round(nnz / d_in))
