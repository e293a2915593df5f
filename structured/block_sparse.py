"""Block-sparse: W[d_in, d_out] tiled by ``block`` x ``block`` blocks, K of them kept.

K = round(density * n_in * n_out) blocks are kept (at least one); at init they are drawn at
random by ``seed`` (independent of the weight init), and ``project`` picks the K blocks of
largest Frobenius norm. Only kept blocks are stored, so params = K b^2; the block products cost
2 K b^2 FLOPs per token (masked.py), unless blocks are so small that one dense product with the
blocks scattered into zeros is faster (``masked.blocks_beat_dense``: at density 0.25, blocks
under 32), which then runs.

With ``impl='xla'`` the block coordinates are state (a ``masked.Coords`` variable, [K, 2]), so
the mask can move at fixed K (experiments/sparsity: static, SET, RigL; ``MaskSpec.slots``): the
contraction takes them traced, within timing noise of static ones (fwd+bwd at d=1024, 4096
tokens, density 0.25, b=32 on 2 shared CPU cores: 0.86x to 1.11x over 5 runs; bitwise equal).
RigL gives the layer a ``masked.GradProbe`` (``grad_probe``), through which it reads the dense
weight gradient on its update steps only.
Each kept block writes its own N x b partial output before they are summed: on 2 CPU cores at
density 0.25, fwd+bwd, block products of 16 take 2.4x dense's time at d = 1024-2048, blocks of
32 0.8x, of 128 0.4x (benchmarks/results/block_sparse_rule_cpu.md); the default block 16 therefore
runs as the dense product there, and saves parameters, not time.
``impl='pallas'`` runs pallas_kernels/block_sparse, whose kernel unrolls over static
coordinates: they stay Python tuples and the mask does not move.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from structured import masked
from structured.base import (Core, StructuredLinear, StructureError, check_fraction, check_int,
                             init_core)

IMPLS = ("xla", "pallas")


class BlockSparse(StructuredLinear):
  kind = "block_sparse"

  def __init__(self, d_in: int, d_out: int, *, block: int = 16, density: float = 0.25,
               seed: int = 0, impl: str = "xla", use_bias: bool = False, role: str = "hidden",
               rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    block = masked.check_block(self.kind, d_in, d_out, block)
    density = check_fraction(self.kind, "density", density, " (the fraction of blocks kept)")
    seed = check_int(self.kind, "seed", seed, 0)
    if impl not in IMPLS:
      raise StructureError(f"{self.kind} impl={impl!r} is unknown; valid: {list(IMPLS)}")
    self.block, self.density, self.seed, self.impl = block, density, seed, impl
    self.grad_probe = nnx.data(None)   # set by RigL (experiments/sparsity/rigl.py)
    n_in, n_out = d_in // block, d_out // block
    self.n_kept = max(1, round(density * n_in * n_out))
    kept = np.random.default_rng(seed).permutation(n_in * n_out) < self.n_kept
    self._set_coords(kept.reshape(n_in, n_out))
    fan_in, fan_out = self._fans()
    self.blocks = init_core(rngs, (self.n_kept, block, block), fan_in, fan_out)

  def _set_coords(self, kept_IxO: np.ndarray) -> None:
    rows, cols = masked.coords(kept_IxO)
    if self.impl == "pallas":
      self.rows, self.cols = rows, cols
    else:
      self.coords = masked.Coords(jnp.asarray(np.stack([rows, cols], axis=1), jnp.int32))

  def _rows_cols(self):
    """(rows, cols): static tuples (pallas) or the traced coordinates."""
    if self.impl == "pallas":
      return self.rows, self.cols
    coords_Kx2 = self.coords[...]
    return coords_Kx2[:, 0], coords_Kx2[:, 1]

  def _fans(self):
    return masked.effective_fans(self.n_kept * self.block**2, self.d_in, self.d_out)

  def resample(self, density: float, key: jax.Array, std) -> None:
    """K = round(density * blocks) (at least one) at random positions, the blocks redrawn at
    ``std(fan_in, fan_out)`` of the new effective fans; called by the sparsity setup, outside
    jit (K sets the blocks' shape)."""
    mask_key, w_key = jax.random.split(key)
    shape = (self.d_in // self.block, self.d_out // self.block)
    self.n_kept = max(1, round(density * shape[0] * shape[1]))
    self.density = self.n_kept / (shape[0] * shape[1])
    self._set_coords(np.asarray(masked.random_mask(mask_key, shape, self.n_kept)))
    blocks = jax.random.normal(w_key, (self.n_kept, self.block, self.block), jnp.float32)
    self.blocks = nnx.Param(blocks * std(*self._fans()))

  def mask_spec(self):
    """Block granularity, slot-stored (only the K kept blocks, at ``coords``); movable at fixed
    K with impl 'xla', not with 'pallas' (static coordinates)."""
    return masked.MaskSpec("blocks", self.block, movable=self.impl != "pallas", slots=True)

  def live_mask(self):
    return masked.grid(*self._rows_cols(), (self.d_in // self.block, self.d_out // self.block))

  def _matmul(self, x):
    if self.impl == "pallas":
      from pallas_kernels.block_sparse import api   # optional fast path; falls back off TPU
      return api.block_sparse_matmul(x, self.blocks[...], self.rows, self.cols, self.d_out)
    y = masked.matmul(x, self.blocks[...], *self._rows_cols(), self.d_out)
    return y if self.grad_probe is None else masked.probe(y, x, self.grad_probe[...])

  def to_dense(self):
    return masked.to_dense(self.blocks[...], *self._rows_cols(), self.d_in, self.d_out)

  def flops_per_token(self):
    """FLOPs executed: the kept block products (2 K b^2) plus the K b adds summing them, or the
    dense product's 2 d_in d_out where that runs instead."""
    return masked.executed_flops(self.n_kept, self.block, self.d_in, self.d_out)

  def ideal_flops_per_token(self):
    """The sparse count 2 nnz = 2 K b^2 (what a kernel accumulating in place costs)."""
    return 2 * self.n_kept * self.block**2

  def cores(self):
    """One core; fans are the effective ones, density * d_in and density * d_out."""
    return (Core("blocks", *self._fans()),)

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """Keeps the K blocks of largest Frobenius norm: optimal among masks of K blocks, since the
    error is the summed squared norm of the dropped blocks."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    norms = masked.block_norms(w_IxO, layer.block)
    top = np.argsort(-norms, axis=None, kind="stable")[:layer.n_kept]
    kept = np.zeros(norms.size, bool)
    kept[top] = True
    layer._set_coords(kept.reshape(norms.shape))
    layer.blocks[...] = masked.gather(w_IxO, *layer._rows_cols(), layer.block)
    return layer
