"""Block Tensor-Train with c >= 2 cores (Compute Better Spent).

d_in = m_0 ... m_{c-1} and d_out = n_0 ... n_{c-1} (balanced, ascending factors). The input
is viewed as x[m_{c-1}, ..., m_0] and the output as y[n_0, ..., n_{c-1}]. Core k is a batch,
over the output modes already produced (n_<k) and the input modes not yet read (m_>k), of
dense maps (m_k, r_k) -> (r_{k+1}, n_k), ranks r_0 = r_c = 1 and r_1 = ... = r_{c-1} = r.
It is stored as w{k}[n_0..n_{k-1}, m_{c-1}..m_{k+1}, m_k, r_k, r_{k+1}, n_k] with the size-1
boundary ranks left out, so c = 2 is w0[m2, m1, r, n1], w1[n1, m2, r, n2] (m1 = m_0, ...):
  z[m2, r, n1] = sum_m1 x[m2, m1] W0[m2, m1, r, n1];
  y[n1, n2]    = sum_{m2, r} z[m2, r, n1] W1[n1, m2, r, n2].
The forward contracts core 0, 1, ..., c-1 in turn and touches every core entry once per
token, so params = FLOPs/2 = sum_k r_k r_{k+1} n_0..n_k m_k..m_{c-1}
(c = 2: r (d_in n1 + d_out m2)). Monarch is a 2-core BTT with fixed factors (monarch.py).
``impl='pallas'`` runs the fused 2-core kernel of pallas_kernels/btt (same layout).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import (Core, StructuredLinear, StructureError, bmm, check_int, factorize,
                             init_core)
from structured.low_rank import svd_split

IMPLS = ("xla", "pallas")
MAX_CORES = 8
# einsum letters (to_dense) of the input modes m_k, output modes n_k and ranks r_k (r_0 unused)
_M, _N, _R = "abdefghi", "ncjklmop", " rstuvwx"


class BTT(StructuredLinear):
  kind = "btt"

  def __init__(self, d_in: int, d_out: int, *, rank: int = 1, cores: int = 2, impl: str = "xla",
               use_bias: bool = False, role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    cores = check_int(self.kind, "cores", cores, 2, MAX_CORES)
    spec = f"{self.kind} cores={cores}"
    self._build_cores(factorize(d_in, cores, spec), factorize(d_out, cores, spec), rank, impl,
                      rngs)

  def _build(self, m1: int, m2: int, n1: int, n2: int, rank: int, impl: str, rngs: nnx.Rngs):
    """2-core cores for d_in = m1 m2 -> d_out = n1 n2 at ``rank`` (used by Monarch)."""
    self._build_cores((m1, m2), (n1, n2), rank, impl, rngs)

  def _build_cores(self, ms: tuple[int, ...], ns: tuple[int, ...], rank: int, impl: str,
                   rngs: nnx.Rngs):
    """Cores for d_in = prod ms -> d_out = prod ns (mode k contracted k-th) at ``rank``."""
    if impl not in IMPLS:
      raise StructureError(f"{self.kind} impl={impl!r} is unknown; valid: {list(IMPLS)}")
    if impl == "pallas" and len(ms) != 2:
      raise StructureError(f"{self.kind} impl='pallas' supports cores=2 only, got "
                           f"cores={len(ms)}; use impl='xla'")
    max_rank = min(ms[0], ns[-1])   # every slab W[m_<k, n_>=k] at fixed (n_<k, m_>=k) has rank <= r
    rank = check_int(self.kind, "rank", rank, 1, max_rank,
                     why=f" for {self.d_in}->{self.d_out} (factors {'x'.join(map(str, ms))} -> "
                         f"{'x'.join(map(str, ns))}); higher ranks add parameters without "
                         "adding expressiveness")
    self.ms, self.ns, self.rank, self.impl = tuple(ms), tuple(ns), rank, impl
    for k, core in enumerate(self.cores()):
      setattr(self, core.name, init_core(rngs, self._core_shape(k), core.fan_in, core.fan_out))

  @property
  def n_cores(self) -> int:
    return len(self.ms)

  def _ranks(self) -> tuple[int, ...]:
    return (1,) + (self.rank,) * (self.n_cores - 1) + (1,)

  def _core_shape(self, k: int) -> tuple[int, ...]:
    c, r = self.n_cores, self.rank
    return (*self.ns[:k], *self.ms[:k:-1], self.ms[k], *(r,) * (k > 0), *(r,) * (k < c - 1),
            self.ns[k])

  def _core_letters(self, k: int) -> str:
    c = self.n_cores
    return (_N[:k] + _M[c - 1:k:-1] + _M[k] + _R[k] * (k > 0) + _R[k + 1] * (k < c - 1)
            + _N[k])

  def _weights(self) -> list[jax.Array]:
    return [getattr(self, f"w{k}")[...] for k in range(self.n_cores)]

  def _matmul(self, x):
    if self.impl == "pallas":
      from pallas_kernels.btt import api   # optional fast path; falls back off TPU/GPU
      return api.btt(x, self.w0[...], self.w1[...])
    return self._last_out(x).T if self._tokens_last() else self._leave(self._middle_out(x))

  def _middle_out(self, x_NxI):
    """Tokens in the middle: the last core's output [n_<c-1, N, n_c-1], no bias."""
    return self._contract(self._enter(x_NxI), x_NxI.shape[0], False, x_NxI.dtype)

  def _last_out(self, x_NxI):
    """Tokens last: the last core's output as y^T [d_out, N], no bias."""
    n_tok = x_NxI.shape[0]
    return self._contract(x_NxI.T, n_tok, True, x_NxI.dtype).reshape(self.d_out, n_tok)

  def _enter(self, x_NxI):
    """Tokens in the middle: x [N, d_in] as the first core reads it, [m_c-1..m_1, N, m_0]."""
    return jnp.moveaxis(x_NxI.reshape(x_NxI.shape[0], *self.ms[::-1]), 0, self.n_cores - 1)

  def _leave(self, t):
    """Tokens in the middle: the last core's [n_<c-1, N, n_c-1] as y [N, d_out]."""
    return jnp.swapaxes(t, 0, 1).reshape(t.shape[1], self.d_out)

  def _contract(self, t, n_tok: int, tokens_last: bool, dtype):
    """Every core in turn, from the first core's input layout to the last core's output layout,
    each core's input in ``dtype``.

    One batch-leading batched matmul per core (base.bmm): before core k the activations are
    t[n_<k, m_>k, N, m_k r_k] (tokens_last: t[n_<k, m_>k, m_k r_k, N]), the core's batch axes
    leading as in its storage, and one transpose moves n_k into the batch (and m_k+1 next to the
    contraction) for core k + 1."""
    c, ms, ns, r = self.n_cores, self.ms, self.ns, self._ranks()
    for k, w in enumerate(self._weights()):
      batch, contracted = w.shape[:c - 1], ms[k] * r[k]   # (n_<k, m_>k), (m_k, r_k)
      shape = (contracted, n_tok) if tokens_last else (n_tok, contracted)
      t = bmm(t.reshape(math.prod(batch), *shape).astype(dtype),
              w.reshape(math.prod(batch), contracted, r[k + 1] * ns[k]), tokens_last)
      if k == c - 1:
        return t
      if tokens_last:   # [n_<k, m_>k, r_k+1, n_k, N] -> [n_<=k, m_>k, r_k+1, N]: rows of N move
        t = jnp.moveaxis(t.reshape(*batch, r[k + 1], ns[k], n_tok), c, k)
      else:             # [n_<k, m_>k, N, r_k+1, n_k] -> [n_<=k, m_>k+1, N, m_k+1, r_k+1]
        t = t.reshape(*batch, n_tok, r[k + 1], ns[k])
        t = _transpose(t, (*range(k), c + 1, *range(k, c - 2), c - 1, c - 2, c))

  def then(self, fn, other, x):
    """``other(fn(self(x)))``. With tokens in the middle y leaves the last core as
    [n_0..n_c-2, N, n_c-1] and x enters the first as [m_c-1..m_1, N, m_0]: when ``other`` is such
    a BTT whose input modes are this layer's output modes (a BTT feed-forward's up and down
    projections), ``fn`` runs in that layout and the transposes out of this layer and into
    ``other`` (and their gradients') are skipped."""
    if not (isinstance(other, BTT) and self._tokens_middle() and other._tokens_middle()
            and self.ns == other.ms[::-1] and self._may_fuse(x, other)):
      return super().then(fn, other, x)
    t = self._middle_blocks(x.reshape(-1, self.d_in))
    t = other._contract(fn(t), t.shape[1], False, x.dtype)
    return other._output(other._leave(t), x)

  def output_blocks(self, x):
    """The last core's output as it leaves, without a transpose back to [N, d_out] (GPT-2's BTT
    head: its [N, 50304] logits moved twice a step, forward and backward): tokens last, [d_out, N,
    1], where the intermediates hold at least as many values per token as x (only x's transpose
    is left; GPT-2's rank-4 head), else tokens in the middle, [n_<c-1, N, n_c-1]."""
    if not (self.impl == "xla" and self._may_fuse(x)):
      return super().output_blocks(x)
    x_NxI = x.reshape(-1, self.d_in)
    if self._between_values() < self.d_in:
      return self._middle_blocks(x_NxI)
    t = self._last_out(x_NxI)[:, :, None]
    if self.bias is not None:
      t = t + self.bias[...].astype(jnp.float32).reshape(-1, 1, 1)
    return t.astype(x.dtype)

  def _middle_blocks(self, x_NxI):
    """Tokens in the middle: the last core's output [n_<c-1, N, n_c-1], the bias added."""
    t = self._middle_out(x_NxI)
    if self.bias is not None:
      t = t + self.bias[...].astype(jnp.float32).reshape(t.shape[0], 1, t.shape[2])
    return t.astype(x_NxI.dtype)

  def _tokens_middle(self) -> bool:
    """Whether the XLA path keeps tokens between the batch and feature axes."""
    return self.impl == "xla" and not self._tokens_last()

  def _tokens_last(self) -> bool:
    """Which layout moves fewer bytes through full transposes (those that reorder every element,
    not whole rows of contiguous values). Tokens in the middle: every intermediate between two
    cores is fully transposed, x and y move in rows of m_0 / n_c-1 features; tokens last: x and y
    are fully transposed (x.T, y.T), the intermediates move in rows of N tokens. So tokens go last
    once the intermediates hold as many values per token as x and y together: rank >= 2, or
    c >= 3 cores (rank 1, c = 2: one intermediate of d_in n_0 / m_0 values per token).
    Measured (benchmarks/results/train_step_cpu.md), not a CPU rule: both layouts are one batched
    GEMM per core, and the bytes a transpose moves cost on every backend."""
    return self._between_values() >= self.d_in + self.d_out

  def _between_values(self) -> int:
    """Values per token the activations hold between the cores."""
    r = self._ranks()
    return sum(r[k + 1] * math.prod(self.ns[:k + 1]) * math.prod(self.ms[k + 1:])
               for k in range(self.n_cores - 1))

  def to_dense(self):
    c = self.n_cores
    operands = [a for k, w in enumerate(self._weights()) for a in (w, self._core_letters(k))]
    w = jnp.einsum(",".join(operands[1::2]) + "->" + _M[c - 1::-1] + _N[:c], *operands[::2])
    return w.reshape(self.d_in, self.d_out)

  def flops_per_token(self):
    return 2 * sum(math.prod(self._core_shape(k)) for k in range(self.n_cores))

  def cores(self):
    r = self._ranks()
    return tuple(Core(f"w{k}", r[k] * m, r[k + 1] * n)
                 for k, (m, n) in enumerate(zip(self.ms, self.ns)))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """Sequential slab SVDs, input side first; for c = 2 the closed-form optimum.

    Step k takes each slab [(m_k, r_k), n_>k] at fixed (n_<=k, m_>k) of the remainder, keeps
    its rank-r truncated SVD (U sqrt(s) -> core k, sqrt(s) V^T -> remainder) and passes the
    remainder on. For c = 2 the slabs are independent and the result is optimal in Frobenius
    norm; for c > 2 it recovers every member exactly (each slab of a member has rank <= r)
    but, like TT-SVD, is only a heuristic for other matrices.
    """
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    c, r = layer.n_cores, layer.rank
    rem = w_IxO.reshape(*layer.ms[::-1], *layer.ns)   # [n_<k, m_>k, m_k, (r_k), n_k, n_>k]
    for k in range(c - 1):
      lead = rem.shape[:c - 1]                       # (n_<k, m_>k)
      row, n_k, rest = rem.shape[c - 1:-(c - k)], layer.ns[k], layer.ns[k + 1:]
      axes = list(range(rem.ndim))
      at_n_k = c - 1 + len(row)
      order = axes[:c - 1] + [at_n_k] + axes[c - 1:at_n_k] + axes[at_n_k + 1:]
      slabs = rem.transpose(order).reshape(*lead, n_k, math.prod(row), math.prod(rest))
      core, rem = svd_split(slabs, r)
      core = jnp.moveaxis(core.reshape(*lead, n_k, *row, r), c - 1, -1)   # n_k last
      getattr(layer, f"w{k}")[...] = core
      rem = rem.reshape(*lead, n_k, r, *rest)
      rem = jnp.moveaxis(rem, c - 1, k)                                 # n_k after n_<k
    getattr(layer, f"w{c - 1}")[...] = rem
    return layer


def _transpose(t: jax.Array, perm: tuple[int, ...]) -> jax.Array:
  """``t.transpose(perm)`` with its size-1 axes (rank 1's) left out of the transpose itself:
  with them XLA:CPU laid the transposes between BTT's rank-1 cores out around the size-1 axis and
  ran some 2x slower ([32, 256, 1, 64] -> [64, 256, 32, 1]: 1.35 vs 0.72 ms)."""
  kept = [d for d in perm if t.shape[d] != 1]
  order = sorted(kept)
  t_kept = t.reshape([t.shape[d] for d in order]).transpose([order.index(d) for d in kept])
  return t_kept.reshape([t.shape[d] for d in perm])
