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
muP fans (Compute Better Spent): G_k maps r_{k-1} a_k -> b_k r_k.
Projection: TT-SVD (Oseledets 2011), exact on members and quasi-optimal otherwise.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import Core, StructuredLinear, check_int, factorize, init_core, matmul

MAX_CORES = 8


def contract_modes(x_NxI: jax.Array, cores: list[jax.Array]) -> jax.Array:
  """x [N, a_1..a_c] through cores G_k [r_{k-1}, a_k, b_k, r_k] (r_0 = r_c = 1), G_1 first:
  t[N, a_k..a_c, b_<k, r_{k-1}] moves a_k to the minor axis (a per-token transpose) and meets
  G_k in one plain GEMM [N.., r_{k-1} a_k] x [r_{k-1} a_k, b_k r_k] (``base.matmul``: its weight
  gradient in the faster orientation), so the outputs arrive as [N, b_1..b_c]. TT and Kronecker
  (rank 1) share it. An einsum contracting the middle modes in place left XLA:CPU transposed-
  operand dots, fwd and bwd (Kronecker d = 1024: 48 vs 21 ms, results/kronecker_ab_cpu.md)."""
  t = x_NxI.reshape(x_NxI.shape[0], *(g.shape[1] for g in cores), 1)
  for g in cores:
    t = jnp.moveaxis(t, 1, -1).astype(x_NxI.dtype)
    rows = t.shape[:-2]
    t = matmul(t.reshape(-1, g.shape[0] * g.shape[1]), g.reshape(-1, g.shape[2] * g.shape[3]))
    t = t.reshape(*rows, g.shape[2], g.shape[3])
  return t.reshape(x_NxI.shape[0], -1)


class TT(StructuredLinear):
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

  def _matmul(self, x):
    return contract_modes(x, self._cores())

  def to_dense(self):
    w = jnp.ones((1, 1, 1))                          # [rows, cols, r]
    for g in self._cores():
      w = jnp.einsum("ijr,rabs->iajbs", w, g)
      w = w.reshape(w.shape[0] * w.shape[1], w.shape[2] * w.shape[3], w.shape[4])
    return w[..., 0]

  def flops_per_token(self):
    r = self.ranks
    return 2 * sum(r[k] * r[k + 1] * math.prod(self.b[:k + 1]) * math.prod(self.a[k:])
                   for k in range(len(self.a)))

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
