"""Kronecker product of c factors: W = A_1 (x) A_2 (x) ... (x) A_c, A_k: [a_k, b_k].

d_in = prod a_k, d_out = prod b_k (balanced factorizations). The input is viewed as a
tensor x[a_1, ..., a_c] and contracted one mode at a time (each a plain GEMM:
``tt.contract_modes``, Kronecker is TT at rank 1), A_1 first for
2 sum_k prod(b_1..b_k) prod(a_k..a_c) FLOPs, e.g. 2 (b_1 d_in + a_2 d_out) for two factors, or
A_c first where that costs fewer (2 (b_2 d_in + a_1 d_out): ``tt.ModeChain``), while params are
only sum_k a_k b_k: FLOPs and parameters diverge. In a feed-forward the up projection contracts
A_c first (``tt.ModeChain.then``), skipping the transposes into both layers. Projection: the Van
Loan-Pitsianis rearrangement, whose best rank-1 approximation gives the factors.
"""

import string

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import Core, check_int, factorize, init_core
from structured.tt import MAX_CORES, ModeChain

MAX_FACTORS = MAX_CORES   # Kronecker is TT at rank 1


class Kronecker(ModeChain):
  kind = "kronecker"

  def __init__(self, d_in: int, d_out: int, *, factors: int = 2, use_bias: bool = False,
               role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    factors = check_int(self.kind, "factors", factors, 2, MAX_FACTORS)
    spec = f"{self.kind} factors={factors}"
    self.a, self.b = factorize(d_in, factors, spec), factorize(d_out, factors, spec)
    for k, (a, b) in enumerate(zip(self.a, self.b)):
      setattr(self, f"f{k}", init_core(rngs, (a, b), a, b))

  @property
  def _factors(self) -> list[jax.Array]:
    return [getattr(self, f"f{k}")[...] for k in range(len(self.a))]

  def _chain(self):
    return [f[None, :, :, None] for f in self._factors]

  def _chain_shapes(self):
    return [(1, a, b, 1) for a, b in zip(self.a, self.b)]

  def to_dense(self):
    w, *rest = self._factors
    for factor in rest:
      w = jnp.kron(w, factor)
    return w

  def cores(self):
    return tuple(Core(f"f{k}", a, b) for k, (a, b) in enumerate(zip(self.a, self.b)))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, steps: int = 100, **hparams):
    """Nearest Kronecker product (Van Loan-Pitsianis): rearranged as a tensor
    T[(a_1 b_1), ..., (a_c b_c)], W = A_1 (x) ... (x) A_c is a rank-1 tensor, so the best
    factors are T's best rank-1 approximation. Two factors: the top singular pair (optimal).
    More: sequential rank-1 SVDs (exact on members), then ``steps`` sweeps of the higher-order
    power method, each a closed-form least-squares update of one factor (the error never
    grows; a local optimum)."""
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    a, b, c = layer.a, layer.b, len(layer.a)
    t = w_IxO.reshape(*a, *b).transpose([m for k in range(c) for m in (k, c + k)])
    t = t.reshape([ak * bk for ak, bk in zip(a, b)])
    vecs, rest = [], t.reshape(1, -1)
    for k in range(c - 1):
      u, s, vt = jnp.linalg.svd(rest.reshape(t.shape[k], -1), full_matrices=False)
      vecs.append(u[:, 0])
      rest = s[0] * vt[0]
    vecs.append(rest)
    letters = string.ascii_letters[:c]
    for _ in range(steps if c > 2 else 0):
      for k in range(c):   # v_k = T x_{j != k} v_j / prod_{j != k} |v_j|^2
        others = [j for j in range(c) if j != k]
        v = jnp.einsum(f"{letters},{','.join(letters[j] for j in others)}->{letters[k]}",
                       t, *(vecs[j] for j in others))
        vecs[k] = v / _nonzero(jnp.prod(jnp.stack([vecs[j] @ vecs[j] for j in others])))
    norms = jnp.stack([jnp.linalg.norm(v) for v in vecs])
    scale = jnp.prod(norms) ** (1 / c)   # spread the magnitude evenly over the factors
    for k, (v, ak, bk) in enumerate(zip(vecs, a, b)):
      getattr(layer, f"f{k}")[...] = (v / _nonzero(norms[k]) * scale).reshape(ak, bk)
    return layer


def _nonzero(norm: jax.Array) -> jax.Array:
  """``norm``, or 1 where it is 0. Only the zero matrix gives a zero vector, and then what is
  divided is zero too (or multiplied by scale = 0): 0 / 1 = 0 where 0 / 0 would be NaN."""
  return jnp.where(norm > 0, norm, 1.0)
