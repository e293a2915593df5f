"""Sparsity masks: the ``Mask`` variable, the mask interface every masked family exposes
(``MaskSpec``, ``masked_layers``, ``apply``; experiments/sparsity/ moves masks through it), and
the block-sparse storage and contraction shared by block_sparse.py and pixelfly.py.

A block-sparse W[d_in, d_out] is tiled by b x b blocks on an [n_in, n_out] block grid
(n_in = d_in / b, n_out = d_out / b). Only its K kept blocks are stored, as ``blocks[K, b, b]``
with block coordinates ``rows`` (input block) and ``cols`` (output block): static Python tuples
sorted by (col, row) (pixelfly; pallas_kernels/block_sparse takes the same), or int32 arrays
(block_sparse keeps them in a ``Coords`` variable so its mask can move). The contraction gathers
the K input blocks, runs one batched matmul and sums the K partial outputs into their output
blocks: 2 K b^2 multiply-add FLOPs plus K b adds for that sum, per token. Small blocks cost more
in partial outputs than they save (fwd+bwd at density 0.25, block 16: 2.4x dense's time on CPU),
so ``matmul`` runs those as one dense product instead (``blocks_beat_dense``).

A mask moves on a layer that stores only its kept blocks (``MaskSpec.slots``) through its dense
view: the algorithms see ``to_dense`` and the grid, and ``to_slots`` writes their new mask back
into the same K slots (kept blocks stay in place, grown ones take the freed slots at 0).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from structured.base import StructureError, bmm, check_int, einsum, matmul as dense_matmul


class Mask(nnx.Variable):
  """A static boolean sparsity mask kept as state (checkpointed, sharded), never trained: not a
  Param, so optimizers and parameter counts skip it."""


class Coords(nnx.Variable):
  """int32 [K, 2] (row, col) block coordinates of a slot-stored layer's K blocks: state like
  ``Mask`` (checkpointed, sharded, never trained), moved by experiments/sparsity."""


class GradProbe(nnx.Variable):
  """A float32 [d_in, d_out] zero on a slot-stored layer whose gradient is the layer's dense
  weight gradient x^T dy (``probe``): what RigL regrows by, which the layer's block products never
  form. Not a Param: only the sparsity step differentiates it, on update steps."""


Ids = tuple[int, ...] | jax.Array   # block coordinates: static, or traced int32 [K]


def _index(ids: Ids):
  """Static tuples as numpy (constant indices), traced coordinates as they are."""
  return np.asarray(ids, np.int32) if isinstance(ids, tuple) else ids


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


# Cost of the block products against one dense product with the blocks scattered into zeros, in
# dense multiply-adds per token: a kept b x b block costs 1.6 b^2 (small batched GEMMs run at 5/8
# of a large GEMM's rate) plus 2000 (its [N, b] partial output written, read and summed). Fit to
# fwd+bwd at d = 1024, 4096 tokens, densities 0.1-0.5, blocks 8-128, 2 CPU cores: it picks the
# faster path in all 15 cases (benchmarks/block_sparse_rule.py measures them on any backend;
# results/block_sparse_rule_cpu.md).
BLOCK_GEMM_PENALTY, BLOCK_OVERHEAD_MACS = 1.6, 2000


def blocks_beat_dense(n_blocks: int, block: int, d_in: int, d_out: int) -> bool:
  """Whether computing only the kept blocks is cheaper than the dense product (cost model above):
  at density 0.25, blocks of 32 and more."""
  return n_blocks * (BLOCK_GEMM_PENALTY * block**2 + BLOCK_OVERHEAD_MACS) < d_in * d_out


def matmul(x_NxI: jax.Array, blocks_KxIxO: jax.Array, rows: Ids, cols: Ids, d_out: int,
           acc: jax.Array | None = None) -> jax.Array:
  """``acc + x @ W`` for the block-sparse W (float32 result) by the cheaper of the block products
  (``block_matmul``) and one dense product with W scattered into zeros (``blocks_beat_dense``):
  same values, both differentiable in the blocks."""
  k, b, _ = blocks_KxIxO.shape
  d_in = x_NxI.shape[-1]
  if blocks_beat_dense(k, b, d_in, d_out):
    return block_matmul(x_NxI, blocks_KxIxO, rows, cols, d_out, acc)
  y_NxO = dense_matmul(x_NxI, to_dense(blocks_KxIxO, rows, cols, d_in, d_out))
  y_NxO = y_NxO.astype(jnp.float32)
  return y_NxO if acc is None else acc.astype(jnp.float32) + y_NxO


def block_matmul(x: jax.Array, blocks_KxIxO: jax.Array, rows: Ids, cols: Ids, d_out: int,
                 acc: jax.Array | None = None) -> jax.Array:
  """``acc + x @ W`` for the block-sparse W, computing only the stored blocks (float32 result).

  ``acc`` ([..., d_out], default zeros; widened to float32) is what the block outputs are summed
  into, so adding another branch costs no extra pass.
  """
  _, b_in, b_out = blocks_KxIxO.shape
  x_NxI = x.reshape(-1, x.shape[-1])
  n = x_NxI.shape[0]
  # block-major layout: the batched dot has its batch dim leading on both operands, the form
  # every backend runs (XLA:CPU's eager bf16 x bf16 -> f32 batched dot rejects n k i, k i o)
  x_KxNxI = x_NxI.reshape(n, -1, b_in).transpose(1, 0, 2)[_index(rows)]
  y_KxNxO = bmm(x_KxNxI, blocks_KxIxO)
  shape_CxNxO = (d_out // b_out, n, b_out)
  y_CxNxO = (jnp.zeros(shape_CxNxO, jnp.float32) if acc is None
             else acc.astype(jnp.float32).reshape(n, d_out // b_out, b_out).transpose(1, 0, 2))
  y_CxNxO = y_CxNxO.at[_index(cols)].add(y_KxNxO, indices_are_sorted=isinstance(cols, tuple))
  return y_CxNxO.transpose(1, 0, 2).reshape(*x.shape[:-1], d_out)


@jax.custom_vjp
def probe(y_NxO: jax.Array, x_NxI: jax.Array, probe_IxO: jax.Array) -> jax.Array:
  """``y`` unchanged; its backward passes dy through and gives ``probe_IxO`` the gradient
  x^T dy that a dense weight in its place would get (x gets nothing from it). The dense product
  runs only where that gradient is used: XLA drops it from steps that do not differentiate the
  probe."""
  del x_NxI, probe_IxO
  return y_NxO


def _probe_fwd(y_NxO, x_NxI, probe_IxO):
  return y_NxO, (x_NxI, probe_IxO)


def _probe_bwd(res, dy_NxO):
  x_NxI, probe_IxO = res
  g_IxO = einsum("ni,no->io", x_NxI, dy_NxO).astype(probe_IxO.dtype)
  return dy_NxO, jnp.zeros_like(x_NxI), g_IxO


probe.defvjp(_probe_fwd, _probe_bwd)


def to_dense(blocks_KxIxO: jax.Array, rows: Ids, cols: Ids, d_in: int, d_out: int) -> jax.Array:
  """The [d_in, d_out] matrix: the stored blocks scattered into zeros, laid out [rows, b_in,
  cols, b_out] so the result is a reshape, not a transpose of the whole matrix (d = 4096, block 16:
  6.8 vs 11.5 ms on CPU)."""
  _, b_in, b_out = blocks_KxIxO.shape
  grid = jnp.zeros((d_in // b_in, b_in, d_out // b_out, b_out), blocks_KxIxO.dtype)
  return grid.at[_index(rows), :, _index(cols), :].set(blocks_KxIxO).reshape(d_in, d_out)


def gather(w_IxO: jax.Array, rows: Ids, cols: Ids, block: int) -> jax.Array:
  """The [K, b, b] blocks of a dense matrix at (rows, cols)."""
  grid = w_IxO.reshape(w_IxO.shape[0] // block, block, w_IxO.shape[1] // block, block)
  return grid[_index(rows), :, _index(cols), :]


def block_norms(w_IxO: jax.Array, block: int) -> np.ndarray:
  """Squared Frobenius norm of every block, [n_in, n_out]."""
  grid = np.asarray(w_IxO, np.float64).reshape(w_IxO.shape[0] // block, block, -1, block)
  return (grid**2).sum(axis=(1, 3))


def executed_flops(n_blocks: int, block: int, d_in: int, d_out: int) -> int:
  """FLOPs per token of ``matmul``: the block products plus the adds that sum them, or the dense
  product where that is cheaper."""
  if blocks_beat_dense(n_blocks, block, d_in, d_out):
    return 2 * n_blocks * block * block + n_blocks * block
  return 2 * d_in * d_out


def effective_fans(nnz: int, d_in: int, d_out: int) -> tuple[int, int]:
  """Mean inputs per output (fan-in) and outputs per input (fan-out) of a sparse matrix.

  A sparse matrix with nnz entries spread evenly acts like a dense one of these fans, which is
  what muP's init scale and learning-rate rule need (e.g. density * d_in for block_sparse).
  """
  return max(1, round(nnz / d_out)), max(1, round(nnz / d_in))


# --- The mask interface: every masked family says how its mask maps onto its weight. ---------


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """How a layer's boolean mask gates its weight, what the mask-update algorithms need to know.

  ``weight``: attribute of the Param the mask gates: the dense [d_in, d_out] weight (the
  ``Mask`` variable is ``layer.mask``, shape [d_in // block, d_out // block]), or with ``slots``
  the [K, block, block] kept blocks at ``layer.coords`` (a ``Coords`` variable; the mask is
  their grid, so K, the density, is fixed); ``block``: side of the square of weights one mask
  entry covers; ``n_m``: (n, m) when every m consecutive entries along d_in must keep exactly
  n, else None; ``movable``: whether the mask may change during training (False for families
  that store only the kept entries at static positions).
  """

  weight: str
  block: int = 1
  n_m: tuple[int, int] | None = None
  movable: bool = True
  slots: bool = False


def grid(rows: Ids, cols: Ids, shape: tuple[int, int]) -> jax.Array:
  """The boolean [n_in, n_out] block mask of K block coordinates (traceable)."""
  return jnp.zeros(shape, bool).at[_index(rows), _index(cols)].set(True)


def to_slots(w_IxO: jax.Array, mask_grid: jax.Array, coords_Kx2: jax.Array, block: int):
  """(blocks, coords, changed) storing a new K-block mask in the K slots of ``coords_Kx2``.

  Slots whose block is still kept stay in place; the newly kept blocks (row-major order) take
  the freed slots in slot order. ``mask_grid`` must keep exactly K blocks (drop and grow swap
  as many). Blocks are read from ``w_IxO``; ``changed`` ([K, block, block]) marks freed slots.
  """
  kept_K = mask_grid[coords_Kx2[:, 0], coords_Kx2[:, 1]]
  new_cells = mask_grid & ~grid(coords_Kx2[:, 0], coords_Kx2[:, 1], mask_grid.shape)
  new_flat = jnp.nonzero(new_cells.reshape(-1), size=kept_K.size, fill_value=0)[0]
  rank_K = jnp.cumsum(~kept_K) - 1   # a freed slot's rank among the freed ones
  new_Kx2 = jnp.stack(jnp.divmod(new_flat[rank_K], mask_grid.shape[1]), axis=1)
  coords_Kx2 = jnp.where(kept_K[:, None], coords_Kx2, new_Kx2.astype(coords_Kx2.dtype))
  blocks = gather(w_IxO, coords_Kx2[:, 0], coords_Kx2[:, 1], block)
  return blocks, coords_Kx2, jnp.broadcast_to(~kept_K[:, None, None], blocks.shape)


def live_count(layer: nnx.Module) -> int:
  """Weights the layer's mask keeps (a concrete count: call it outside jit)."""
  return int(jnp.sum(layer.live_mask())) * layer.mask_spec().block**2


def masked_layers(model: nnx.Module) -> dict[tuple, nnx.Module]:
  """Every layer of ``model`` that exposes a mask, by its path: it implements ``mask_spec()``
  (a MaskSpec) and ``live_mask()`` (its boolean mask grid, [d_in / block, d_out / block])."""
  return {tuple(path): node for path, node in nnx.iter_graph(model)
          if isinstance(node, nnx.Module) and hasattr(node, "mask_spec")}


def expand(mask_grid: jax.Array, block: int) -> jax.Array:
  """The per-weight mask of a [d_in / block, d_out / block] mask grid."""
  if block == 1:
    return mask_grid
  return jnp.repeat(jnp.repeat(mask_grid, block, axis=0), block, axis=1)


def apply(w_IxO: jax.Array, mask_grid: jax.Array, block: int = 1,
          straight_through: bool = False) -> jax.Array:
  """W ⊙ M. With ``straight_through`` the value is the same but the gradient reaches every
  entry of W unmasked (SR-STE, and RigL's dense gradient): W + stop_gradient(W ⊙ M - W)."""
  masked = jnp.where(expand(mask_grid, block), w_IxO, 0.0)
  if straight_through:
    return w_IxO + jax.lax.stop_gradient(masked - w_IxO)
  return masked


def block_scores(x_IxO: jax.Array, block: int) -> jax.Array:
  """|x| per mask entry: the entry itself (block 1) or the block's Frobenius norm squared."""
  if block == 1:
    return jnp.abs(x_IxO)
  d_in, d_out = x_IxO.shape
  grid = x_IxO.reshape(d_in // block, block, d_out // block, block).astype(jnp.float32)
  return jnp.sum(grid**2, axis=(1, 3))


def keep_top(scores: jax.Array, k, eligible: jax.Array | None = None) -> jax.Array:
  """Boolean mask of the ``k`` largest ``scores`` among ``eligible`` entries (all if None).

  ``k`` may be traced (it is a rank threshold, not a shape); ties go to the lower flat index,
  so the result is deterministic. Fewer than k eligible entries: all of them.
  """
  flat = scores.reshape(-1).astype(jnp.float32)
  if eligible is not None:
    flat = jnp.where(eligible.reshape(-1), flat, -jnp.inf)
  order = jnp.argsort(-flat, stable=True)
  rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  keep = rank < k
  if eligible is not None:
    keep = keep & eligible.reshape(-1)
  return keep.reshape(scores.shape)


def random_mask(key: jax.Array, shape: tuple[int, ...], k: int) -> jax.Array:
  """A boolean mask with exactly ``k`` entries set, uniformly at random."""
  return keep_top(jax.random.uniform(key, shape), k)

