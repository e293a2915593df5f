"""Pixelated butterfly (Pixelfly, Dao et al. ICLR'22): a flat block-butterfly mask plus low rank.

W = S + U V. S is block-sparse (masked.py) on a fixed mask, as HazyResearch/fly's
``FlatBlockButterflySparsityConfig`` builds it: the union of the first ``n_factors`` butterfly
factor masks of size ``butterfly_size`` (entry (i, j) is on iff i XOR j is 0 or 2^k, k <
n_factors), stretched to the matrix and kept at ``block`` resolution (a block is kept if any
entry it covers is on). Rectangular shapes: the square butterfly mask is stretched
independently along each axis, entry (i, j) of W taking mask entry
(i * butterfly_size // d_in, j * butterfly_size // d_out), i.e. each butterfly entry covers a
(d_in / butterfly_size) x (d_out / butterfly_size) tile, as in fly. U [d_in, rank] and
V [rank, d_out] are the low-rank term; fly gates the two branches with a learned sigmoid,
here they are simply added.

When ``block`` divides both tile sizes (d_in / butterfly_size, d_out / butterfly_size), every
tile is wholly kept or dropped, so S is the butterfly at tile level: output tile j reads input
tiles j XOR s, s in {0, 1, 2, ..., 2^(n_factors-1)}. The product then runs as one batched matmul
over output tiles (the shifted input tiles side by side, each a reshape and a flip), instead of
a batched matmul of block x block products summed by a scatter-add. Single d x d layer,
forward + backward, 4096 tokens, 2 CPU cores: 1.47x / 0.86x / 0.64x dense's time at d = 1024 /
2048 / 4096, where the scatter-add path took 7.7x / 24.8x / 31.2x
(benchmarks/results/train_step_cpu_quiet.md vs ..._quiet_before.md). The stored blocks keep their
layout; other shapes take masked.matmul.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from structured import masked
from structured.base import (Core, StructuredLinear, StructureError, bmm, check_int, init_core,
                             matmul, nearest_valid)
from structured.low_rank import svd_split


def butterfly_mask(size: int, n_factors: int) -> np.ndarray:
  """[size, size] union of the first n_factors butterfly factor masks: i XOR j in {0, 2^k}."""
  xor = np.arange(size)[:, None] ^ np.arange(size)[None, :]
  return (xor == 0) | np.isin(xor, [2**k for k in range(n_factors)])


def block_layout(d_in: int, d_out: int, butterfly_size: int, n_factors: int,
                 block: int) -> np.ndarray:
  """[d_in / block, d_out / block] mask: the stretched butterfly mask, any-pooled to blocks."""
  def touches(d):   # [d / block, butterfly_size]: which butterfly indices a block covers
    owner = np.arange(d) * butterfly_size // d
    return np.eye(butterfly_size, dtype=int)[owner].reshape(d // block, block, -1).any(1)
  bfly = butterfly_mask(butterfly_size, n_factors).astype(int)
  return (touches(d_in).astype(int) @ bfly @ touches(d_out).T.astype(int)) > 0


class Pixelfly(StructuredLinear):
  kind = "pixelfly"

  def __init__(self, d_in: int, d_out: int, *, butterfly_size: int = 16, n_factors: int = 2,
               block: int = 8, rank: int = 1, use_bias: bool = False, role: str = "hidden",
               rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    butterfly_size, n_factors, block, rank = self._check(butterfly_size, n_factors, block, rank)
    self.butterfly_size, self.n_factors = butterfly_size, n_factors
    self.block, self.rank = block, rank
    layout = block_layout(d_in, d_out, butterfly_size, n_factors, block)
    self.rows, self.cols = masked.coords(layout)
    self.n_kept = len(self.rows)
    self.blocks = init_core(rngs, (self.n_kept, block, block), *self._fans())
    self.u = init_core(rngs, (d_in, rank), d_in, rank)
    self.v = init_core(rngs, (rank, d_out), rank, d_out)

  def _check(self, butterfly_size, n_factors, block, rank):
    """The hyperparameters as ints, or one StructureError naming the first that is invalid."""
    butterfly_size = check_int(self.kind, "butterfly_size", butterfly_size, 2,
                               why=", a power of 2 (e.g. 8, 16, 32)")
    log_n = butterfly_size.bit_length() - 1
    if butterfly_size != 2**log_n:
      raise StructureError(f"{self.kind} butterfly_size={butterfly_size} must be a power of 2 "
                           ">= 2 (e.g. 8, 16, 32)")
    n_factors = check_int(self.kind, "n_factors", n_factors, 1, log_n, "log2(butterfly_size)")
    for name, d in (("d_in", self.d_in), ("d_out", self.d_out)):
      if d % butterfly_size:
        raise StructureError(f"{self.kind} butterfly_size={butterfly_size} must divide "
                             f"{name}={d}; nearest valid widths: "
                             f"{nearest_valid(d, lambda w: w % butterfly_size == 0)}")
    block = masked.check_block(self.kind, self.d_in, self.d_out, block)
    rank = check_int(self.kind, "rank", rank, 1, min(self.d_in, self.d_out), "min(d_in, d_out)")
    return butterfly_size, n_factors, block, rank

  def _fans(self):
    return masked.effective_fans(self.n_kept * self.block**2, self.d_in, self.d_out)

  def _matmul(self, x):
    z = matmul(x, self.u[...]).astype(x.dtype)
    low_rank = matmul(z, self.v[...])
    plan = tile_plan(self.d_in, self.d_out, self.butterfly_size, self.n_factors, self.block)
    if plan is None:
      return masked.matmul(x, self.blocks[...], self.rows, self.cols, self.d_out, low_rank)
    return (_tile_matmul(x, self.blocks[...], self.butterfly_size, plan).astype(jnp.float32)
            + low_rank)

  def to_dense(self):
    sparse = masked.to_dense(self.blocks[...], self.rows, self.cols, self.d_in, self.d_out)
    return sparse + self.u[...] @ self.v[...]

  def flops_per_token(self):
    """FLOPs executed: the kept block products and the low-rank term, plus the adds joining
    them: d_out on the tile path (one contraction sums a tile's inputs), K b otherwise (each
    block's output summed into the low-rank output), or the dense product where ``masked.matmul``
    runs that (its d_out adds joining the low-rank output not counted)."""
    low_rank = 2 * self.rank * (self.d_in + self.d_out)
    if tile_plan(self.d_in, self.d_out, self.butterfly_size, self.n_factors, self.block):
      return 2 * self.n_kept * self.block**2 + self.d_out + low_rank
    return masked.executed_flops(self.n_kept, self.block, self.d_in, self.d_out) + low_rank

  def ideal_flops_per_token(self):
    """The sparse count 2 (nnz + rank (d_in + d_out))."""
    return 2 * (self.n_kept * self.block**2 + self.rank * (self.d_in + self.d_out))

  def cores(self):
    """Sparse blocks (effective fans nnz / d_out, nnz / d_in), then the low-rank U and V."""
    return (Core("blocks", *self._fans()), Core("u", self.d_in, self.rank),
            Core("v", self.rank, self.d_out))

  def zero_init_cores(self):
    """Both terms of S + U V: the sparse blocks and V."""
    return ("blocks", "v")

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, steps: int = 50, **hparams):
    """Alternating minimisation of ||W - S - U V||, S on the mask: first S = the masked W and
    U V = the best rank-r (SVD) fit of W - S (one pass), then ``steps`` - 1 more passes of
    S = mask(W - U V), U V = SVD_r(W - S), and a last S = mask(W - U V). Each update is an
    exact minimisation over one term, so the error never rises; it recovers members of the
    family, but it is not proven globally optimal."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    layout = block_layout(*w_IxO.shape, layer.butterfly_size, layer.n_factors, layer.block)
    keep_IxO = jnp.asarray(np.kron(layout, np.ones((layer.block, layer.block), bool)))
    sparse_IxO, layer.u[...], layer.v[...] = _alternate(
        jnp.asarray(w_IxO, jnp.float32), keep_IxO, max(1, steps), layer.rank)
    layer.blocks[...] = masked.gather(sparse_IxO, layer.rows, layer.cols, layer.block)
    return layer


@functools.lru_cache(maxsize=None)
def tile_plan(d_in: int, d_out: int, butterfly_size: int, n_factors: int,
              block: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray] | None:
  """(shifts, order, inverse) for the tile-level product, or None where ``block`` does not
  divide both tile sizes. ``blocks[order]``, reshaped, is [butterfly_size, len(shifts), t_in,
  t_out]: entry (j, s) the tile at (j XOR shifts[s], j); ``inverse`` undoes ``order``."""
  t_in, t_out = d_in // butterfly_size, d_out // butterfly_size
  if t_in % block or t_out % block:
    return None
  rows, cols = masked.coords(block_layout(d_in, d_out, butterfly_size, n_factors, block))
  slot = {rc: k for k, rc in enumerate(zip(rows, cols))}
  shifts = (0,) + tuple(2**k for k in range(n_factors))
  n_in, n_out = t_in // block, t_out // block
  order = np.array([slot[(j ^ s) * n_in + bi, j * n_out + bo] for j in range(butterfly_size)
                    for s in shifts for bi in range(n_in) for bo in range(n_out)])
  return shifts, order, np.argsort(order)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _permute(x_KxBxB: jax.Array, plan) -> jax.Array:
  """``x[order]``; its backward is the inverse gather (not a scatter-add)."""
  return x_KxBxB[plan[1]]


def _permute_fwd(x_KxBxB, plan):
  return _permute(x_KxBxB, plan), None


def _permute_bwd(plan, _, g_KxBxB):
  return (g_KxBxB[plan[2]],)


_permute.defvjp(_permute_fwd, _permute_bwd)


def _tile_matmul(x: jax.Array, blocks_KxBxB: jax.Array, butterfly_size: int, plan) -> jax.Array:
  """``x @ S`` at tile level (see the module docstring), in ``x``'s dtype."""
  shifts = plan[0]
  b = blocks_KxBxB.shape[1]
  t_in = x.shape[-1] // butterfly_size
  n_in = t_in // b
  n_out = blocks_KxBxB.shape[0] // (butterfly_size * len(shifts) * n_in)
  w_TxSxIxO = _permute(blocks_KxBxB, plan).reshape(
      butterfly_size, len(shifts), n_in, n_out, b, b).transpose(0, 1, 2, 4, 3, 5)
  x_TxNxI = x.reshape(-1, butterfly_size, t_in).transpose(1, 0, 2)

  def xor_shift(t_TxNxI, s):   # tile j takes tile j XOR s: swap neighbouring runs of s tiles
    if s == 0:
      return t_TxNxI
    _, n, i = t_TxNxI.shape
    return jnp.flip(t_TxNxI.reshape(-1, 2, s, n, i), 1).reshape(butterfly_size, n, i)

  x_TxNxSI = jnp.concatenate([xor_shift(x_TxNxI, s) for s in shifts], axis=2)
  y_TxNxO = bmm(x_TxNxSI, w_TxSxIxO.reshape(butterfly_size, len(shifts) * t_in, n_out * b))
  return y_TxNxO.transpose(1, 0, 2).reshape(*x.shape[:-1], butterfly_size * n_out * b)


@functools.partial(jax.jit, static_argnums=3)
def _alternate(w_IxO, keep_IxO, steps, rank):
  """(S, U, V) after ``steps`` alternating passes (see ``Pixelfly.project``)."""
  def fit_low_rank(r_IxO):
    return svd_split(r_IxO, rank)

  def sparse(u_IxR, v_RxO):
    return jnp.where(keep_IxO, w_IxO - u_IxR @ v_RxO, 0.0)

  uv = fit_low_rank(jnp.where(keep_IxO, 0.0, w_IxO))
  uv = jax.lax.fori_loop(1, steps, lambda _, uv: fit_low_rank(w_IxO - sparse(*uv)), uv)
  return sparse(*uv), *uv
