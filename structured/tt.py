"""Tensor-Train matrix (TT-matrix / MPO) with c cores of rank r.

d_in = a_1 ... a_c and d_out = b_1 ... b_c (balanced, ascending factors), rows and columns
read with mode 1 slowest, and
  W[(i_1..i_c), (j_1..j_c)] = G_1[:, i_1, j_1, :] G_2[:, i_2, j_2, :] ... G_c[:, i_c, j_c, :]
with cores G_k[r_{k-1}, a_k, b_k, r_k], r_0 = r_c = 1, r_1 = ... = r_{c-1} = r. Rank 1 is
the Kronecker product G_1 (x) ... (x) G_c (kronecker.py). Unlike BTT the cores are shared
across the other modes, so params = sum_k r_{k-1} a_k b_k r_k is far below FLOPs/2.
Forward (``contract_modes``): x[a_1..a_c] is contracted with G_1, G_2, ..., G_c in turn; step
k maps t[b_<k, r_{k-1}, a_k, a_>k] -> t[b_<=k, r_k, a_>k], so
  FLOPs = 2 sum_k r_{k-1} r_k b_1..b_k a_k..a_c.
A layer whose G_c-first order (``mirror``) costs fewer FLOPs runs that instead, and a feed-forward's
up projection contracts G_c first where it costs no more (``ModeChain.then``) so that its output and
the down projection's input skip a transpose each.
muP fans (Compute Better Spent): G_k maps r_{k-1} a_k -> b_k r_k.
Projection: TT-SVD (Oseledets 2011), exact on members and quasi-optimal otherwise.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from structured.base import Core, StructuredLinear, check_int, factorize, init_core, matmul

MAX_CORES = 8


def contract_modes(x_NxI: jax.Array, cores: list[jax.Array], *,
                   modes_reversed: bool = False) -> jax.Array:
  """x [N, a_1..a_c] through cores G_k [r_{k-1}, a_k, b_k, r_k] (r_0 = r_c = 1), G_1 first:
  t[N, a_k..a_c, b_<k, r_{k-1}] moves a_k to the minor axis (a per-token transpose) and meets
  G_k in one plain GEMM [N.., r_{k-1} a_k] x [r_{k-1} a_k, b_k r_k] (``base.matmul``: its weight
  gradient in the faster orientation), so the outputs arrive as [N, b_1..b_c]. TT and Kronecker
  (rank 1) share it. An einsum contracting the middle modes in place left XLA:CPU transposed-
  operand dots, fwd and bwd (Kronecker d = 1024: 48 vs 21 ms, results/kronecker_ab_cpu.md).
  ``modes_reversed``: x arrives as [N, a_c..a_1] (as a ``mirror``ed chain leaves its output), so
  a_1 is minor already and each next mode is the last of those left: the first transpose goes."""
  shapes = [g.shape[1] for g in cores]
  t = x_NxI.reshape(x_NxI.shape[0], *(shapes[::-1] if modes_reversed else shapes), 1)
  for k, g in enumerate(cores):
    mode = len(cores) - k if modes_reversed else 1
    if not (mode == t.ndim - 2 and t.shape[-1] == 1):   # [.., a_k, 1] is already a GEMM's rows
      t = jnp.moveaxis(t, mode, -1)
    t = t.astype(x_NxI.dtype)
    rows = t.shape[:-2]
    t = matmul(t.reshape(-1, g.shape[0] * g.shape[1]), g.reshape(-1, g.shape[2] * g.shape[3]))
    t = t.reshape(*rows, g.shape[2], g.shape[3])
  return t.reshape(x_NxI.shape[0], -1)


def mirror(cores: list[jax.Array]) -> list[jax.Array]:
  """The same map with its input and output modes read last-first: G'_k = G_{c+1-k}, rank axes
  swapped. ``contract_modes(x, mirror(cores), modes_reversed=True)`` contracts x [N, a_1..a_c]
  from a_c (minor, so no transpose in) and leaves y as [N, b_c..b_1]."""
  return [g if g.shape[0] == g.shape[3] == 1 else jnp.transpose(g, (3, 1, 2, 0))
          for g in cores[::-1]]


def chain_flops(core_shapes: list[tuple[int, int, int, int]]) -> int:
  """Forward FLOPs per token of ``contract_modes`` through cores of these [r, a, b, r'] shapes:
  step k is a GEMM of prod(b_<k) prod(a_>k) rows, 2 sum_k r_{k-1} r_k b_1..b_k a_k..a_c."""
  a, b = [s[1] for s in core_shapes], [s[2] for s in core_shapes]
  return 2 * sum(s[0] * s[3] * math.prod(b[:k + 1]) * math.prod(a[k:])
                 for k, s in enumerate(core_shapes))


class ModeChain(StructuredLinear):
  """A layer that contracts its input's modes one at a time (``contract_modes``): TT, Kronecker.
  Subclasses set ``a``, ``b`` and give their cores as [r_{k-1}, a_k, b_k, r_k] (``_chain``).
  It runs (and counts) whichever order costs fewer FLOPs: G_1 first, or its ``mirror`` (G_c
  first, the output's modes then put back in order: one transpose, as G_1 first transposes the
  input). They differ where the factors do: TT c = 3, rank 2, 4 x 16 x 16 -> 16 x 16 x 16 (the
  CIFAR MLP's w = 1024 up projection) 851,968 vs 262,144 FLOPs a token."""

  def _chain(self) -> list[jax.Array]:
    raise NotImplementedError

  def _chain_shapes(self) -> list[tuple[int, int, int, int]]:
    raise NotImplementedError

  def _mirrored_flops(self) -> int:
    return chain_flops([(s[3], s[1], s[2], s[0]) for s in self._chain_shapes()[::-1]])

  def _runs_mirrored(self) -> bool:
    """Whether G_c first costs fewer FLOPs than G_1 first (ties keep G_1 first)."""
    return self._mirrored_flops() < chain_flops(self._chain_shapes())

  def _matmul(self, x):
    if not self._runs_mirrored():
      return contract_modes(x, self._chain())
    t = self._mirrored_out(x).reshape(x.shape[0], *self.b[::-1])
    return jnp.transpose(t, (0, *range(len(self.b), 0, -1))).reshape(x.shape[0], self.d_out)

  def _mirrored_out(self, x_NxI):
    """x [N, a_1..a_c] through the ``mirror``, G_c first (a_c is minor: no transpose in), left as
    [N, b_c..b_1]."""
    return contract_modes(x_NxI, mirror(self._chain()), modes_reversed=True)

  def flops_per_token(self):
    return min(chain_flops(self._chain_shapes()), self._mirrored_flops())

  def then(self, fn, other, x):
    """``other(fn(self(x)))``. When ``other`` is a chain whose input modes are this layer's output
    modes (a feed-forward's up and down projections), this layer contracts its ``mirror`` (where
    that is its cheaper order or a tie: balanced factors) and ``other`` G_1 first (where that is
    its own), leaving [N, b_c..b_1] between them, ``fn`` runs there and ``other`` reads it with
    a_1 minor: the transposes into both layers (and their gradients') are skipped. Kronecker
    w=1024's CIFAR MLP step 0.82-0.85x, its forward 0.67-0.72x (2 cores;
    results/kronecker_ab_cpu.md)."""
    if not (isinstance(other, ModeChain) and tuple(self.b) == tuple(other.a)
            and self._mirrored_flops() <= chain_flops(self._chain_shapes())
            and not other._runs_mirrored() and self._may_fuse(x, other)):
      return super().then(fn, other, x)
    x_NxI = x.reshape(-1, self.d_in)
    t = self._mirrored_out(x_NxI)   # [N, b_c..b_1]
    if self.bias is not None:
      # the bias in [b_c..b_1] order, gathered: as a transpose XLA:CPU fuses the permuted read
      # into the elementwise pass after, unvectorized (gelu(t + b) [256, 4096]: 2.2 vs 0.9 ms)
      order = np.arange(self.d_out).reshape(self.b).transpose().reshape(-1)
      t = t + jnp.take(self.bias[...].astype(jnp.float32), order)
    t = contract_modes(fn(t.astype(x.dtype)), other._chain(), modes_reversed=True)
    return other._output(t, x)


class TT(ModeChain):
  kind = "tt"

  def __init__(self, d_in: int, d_out: int, *, cores: int = 3, rank: int = 2,
               use_bias: bool = False, role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    cores = check_int(self.kind, "cores", cores, 2, MAX_CORES)
    spec = f"{self.kind} cores={cores}"
    self.a, self.b = factorize(d_in, cores, spec), factorize(d_out, cores, spec)
    # the unfolding W[(i_<=k, j_<=k), (i_>k, j_>k)] has rank <= r_k; its smallest size bounds r
    max_rank = min(self.a[0] * self.b[0], self.a[-1] * self.b[-1])
    factors = f"{'x'.join(map(str, self.a))} -> {'x'.join(map(str, self.b))}"
    self.rank = check_int(self.kind, "rank", rank, 1, max_rank,
                          why=f" for {d_in}->{d_out} (factors {factors}); higher ranks add "
                              "parameters without adding expressiveness")
    r = self.ranks
    for k, core in enumerate(self.cores()):
      setattr(self, core.name,
              init_core(rngs, (r[k], self.a[k], self.b[k], r[k + 1]), core.fan_in, core.fan_out))

  @property
  def ranks(self) -> tuple[int, ...]:
    return (1,) + (self.rank,) * (len(self.a) - 1) + (1,)

  def _cores(self) -> list[jax.Array]:
    return [getattr(self, f"g{k}")[...] for k in range(len(self.a))]

  def _chain(self):
    return self._cores()

  def _chain_shapes(self):
    r = self.ranks
    return [(r[k], a, b, r[k + 1]) for k, (a, b) in enumerate(zip(self.a, self.b))]

  def to_dense(self):
    w = jnp.ones((1, 1, 1))                          # [rows, cols, r]
    for g in self._cores():
      w = jnp.einsum("ijr,rabs->iajbs", w, g)
      w = w.reshape(w.shape[0] * w.shape[1], w.shape[2] * w.shape[3], w.shape[4])
    return w[..., 0]

  def cores(self):
    r = self.ranks
    return tuple(Core(f"g{k}", r[k] * a, b * r[k + 1])
                 for k, (a, b) in enumerate(zip(self.a, self.b)))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, **hparams):
    """TT-SVD: sequential truncated SVDs of the unfoldings of W[(a_1 b_1), ..., (a_c b_c)].

    Exact when W is a member (every unfolding has rank <= r); otherwise its error is at most
    sqrt(c - 1) times the best rank-r TT approximation (Oseledets 2011, Thm 2.2).
    """
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    a, b, r, c = layer.a, layer.b, layer.ranks, len(layer.a)
    t = w_IxO.reshape(*a, *b).transpose([m for k in range(c) for m in (k, c + k)])
    rest = t.reshape(1, -1)                          # [r_{k-1}, (a_k b_k ... a_c b_c)]
    for k in range(c - 1):
      u, s, vt = jnp.linalg.svd(rest.reshape(r[k] * a[k] * b[k], -1), full_matrices=False)
      getattr(layer, f"g{k}")[...] = u[:, :r[k + 1]].reshape(r[k], a[k], b[k], r[k + 1])
      rest = s[:r[k + 1], None] * vt[:r[k + 1]]
    getattr(layer, f"g{c - 1}")[...] = rest.reshape(r[c - 1], a[-1], b[-1], 1)
    return layer
