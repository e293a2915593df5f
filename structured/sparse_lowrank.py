"""Sparse plus low-rank (SLTrain, Han et al. NeurIPS'24): W = U V + S.

U [d_in, r], V [r, d_out]; S has nnz = round(density d_in d_out) entries (at least one) on a
support of flat indices (row * d_out + col) drawn uniformly at random by ``seed``. The support
is state (a ``Support`` variable: checkpointed, never trained), only its values are learnable,
so params = r (d_in + d_out) + nnz.

Two contractions (``impl``):
  - 'dense' (default, SLTrain's own op): materialise W = U V + scatter(S) once per call and run
    one dense GEMM: 2 d_in d_out FLOPs per token (plus 2 r d_in d_out per call for U V, which
    the batch amortises). Fast on accelerators; saves memory and parameters, not compute.
  - 'gather': the low-rank path x U V plus the sparse path (gather x at the support's rows,
    multiply by the values, scatter-add into the support's columns): 2 (r (d_in + d_out) + nnz)
    FLOPs per token, the ideal count, but it holds a [tokens, nnz] intermediate (memory bound).
Init follows SLTrain: V = 0 (the layer starts as its sparse part, and U gets gradients once V
moves, as in LoRA), U and the values at their muP std (``init_core``; the values with the
effective fans density d_in, density d_out). muP's zero-init roles zero the values (the last
core), so with V = 0 the whole layer starts at zero.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from structured import masked
from structured.base import (Core, StructuredLinear, StructureError, check_fraction, check_int,
                             einsum, init_core, matmul)
from structured.low_rank import svd_split

IMPLS = ("dense", "gather")


class Support(nnx.Variable):
  """Flat indices (row * d_out + col) of a sparse matrix's stored entries: state, never trained."""


class SparseLowRank(StructuredLinear):
  kind = "sparse_lowrank"

  def __init__(self, d_in: int, d_out: int, *, rank: int = 4, density: float = 0.05,
               seed: int = 0, impl: str = "dense", use_bias: bool = False, role: str = "hidden",
               rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    rank = check_int(self.kind, "rank", rank, 1, min(d_in, d_out), "min(d_in, d_out)")
    density = check_fraction(self.kind, "density", density,
                             " (the fraction of entries of the sparse part)")
    seed = check_int(self.kind, "seed", seed, 0)
    if impl not in IMPLS:
      raise StructureError(f"{self.kind} impl={impl!r} is unknown; valid: {list(IMPLS)}")
    self.rank, self.density, self.seed, self.impl = rank, density, seed, impl
    self.nnz = max(1, round(density * d_in * d_out))
    flat = np.random.default_rng(seed).permutation(d_in * d_out)[:self.nnz]
    self.support = Support(jnp.asarray(np.sort(flat), jnp.int32))
    self.u = init_core(rngs, (d_in, rank), d_in, rank)
    self.v = nnx.Param(jnp.zeros((rank, d_out), jnp.float32))
    self.values = init_core(rngs, (self.nnz,), *self._fans())

  def _fans(self):
    return masked.effective_fans(self.nnz, self.d_in, self.d_out)

  def mask_spec(self):
    """The sparse part's support; not movable (its values are stored at fixed indices)."""
    return masked.MaskSpec("values", 1, movable=False)

  def live_mask(self):
    flat = jnp.zeros((self.d_in * self.d_out,), bool).at[self.support[...]].set(True)
    return flat.reshape(self.d_in, self.d_out)

  def _sparse_dense(self) -> jax.Array:
    """S as a [d_in, d_out] matrix."""
    flat = jnp.zeros((self.d_in * self.d_out,), jnp.float32).at[self.support[...]].set(
        self.values[...], unique_indices=True, indices_are_sorted=True)
    return flat.reshape(self.d_in, self.d_out)

  def _matmul(self, x):
    if self.impl == "dense":
      return einsum("...i,io->...o", x, self.to_dense())
    z = matmul(x, self.u[...]).astype(x.dtype)
    y = matmul(z, self.v[...])
    rows, cols = jnp.divmod(self.support[...], self.d_out)
    prod = (x[..., rows] * self.values[...].astype(x.dtype)).astype(jnp.float32)
    return y.astype(jnp.float32).at[..., cols].add(prod)   # the sparse terms summed in float32

  def to_dense(self):
    return self.u[...] @ self.v[...] + self._sparse_dense()

  def flops_per_token(self):
    """FLOPs executed per token: the dense GEMM ('dense') or the two paths ('gather')."""
    if self.impl == "dense":
      return 2 * self.d_in * self.d_out
    return self.ideal_flops_per_token()

  def ideal_flops_per_token(self):
    """The factored count 2 (r (d_in + d_out) + nnz)."""
    return 2 * (self.rank * (self.d_in + self.d_out) + self.nnz)

  def cores(self):
    """U, V, then the sparse values (effective fans nnz / d_out, nnz / d_in)."""
    return (Core("u", self.d_in, self.rank), Core("v", self.rank, self.d_out),
            Core("values", *self._fans()))

  def zero_init_cores(self):
    """Both terms of U V + S: V and the sparse values."""
    return ("v", "values")

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, steps: int = 20, **hparams):
    """SVD plus the largest residual entries, alternated (GoDec, Zhou & Tao 2011).

    Starts from S = 0, then ``steps`` times: U V = the rank-r truncated SVD of W - S, and S =
    the nnz largest-magnitude entries of W - U V. The support is chosen by the projection (the
    layer's random ``seed`` support is replaced). Each update minimises ||W - U V - S|| exactly
    over one term (S over all supports of size nnz), so the error never rises; it recovers
    members of the family but is not proven globally optimal.
    """
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    w_IxO = jnp.asarray(w_IxO, jnp.float32)
    support, values, u_IxR, v_RxO = _godec(w_IxO, layer.rank, layer.nnz, max(1, steps))
    layer.support[...], layer.values[...] = support, values
    layer.u[...], layer.v[...] = u_IxR, v_RxO
    return layer


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _godec(w_IxO, rank, nnz, steps):
  """(support, values, U, V) after ``steps`` alternations of rank-r SVD and top-nnz residual."""
  def low_rank(sparse_IxO):
    return svd_split(w_IxO - sparse_IxO, rank)

  def top(u_IxR, v_RxO):
    resid = (w_IxO - u_IxR @ v_RxO).reshape(-1)
    support = jnp.sort(jax.lax.top_k(jnp.abs(resid), nnz)[1])
    return support, resid[support]

  def step(_, sparse_IxO):
    support, values = top(*low_rank(sparse_IxO))
    return jnp.zeros(w_IxO.size).at[support].set(values).reshape(w_IxO.shape)

  u_IxR, v_RxO = low_rank(jax.lax.fori_loop(0, steps - 1, step, jnp.zeros_like(w_IxO)))
  support, values = top(u_IxR, v_RxO)
  return support.astype(jnp.int32), values, u_IxR, v_RxO
