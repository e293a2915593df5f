"""BLAST (Lee et al., NeurIPS'24): block-level adaptive structure with shared bases.

W[d_in, d_out] is split into b_in x b_out blocks of size p x q (p = d_in / b_in,
q = d_out / b_out). Block (j, i) is V_j diag(s_ji) U_i: input bases V[b_in, p, r] shared along
each block row, output bases U[b_out, r, q] shared along each block column and diagonal
couplings S[b_in, b_out, r]. (The paper's y = A x has A_ij = U_i diag(s_ij) V_j^T; ours is
its transpose, x @ W.) The forward reads each input block through its basis, mixes blocks
per rank channel and writes each output block through its basis:
  z[.., j, r] = sum_p x[.., j, p] V[j, p, r];  w[.., i, r] = sum_j z[.., j, r] S[j, i, r];
  y[.., i, q] = sum_r w[.., i, r] U[i, r, q].
Every core entry is used once per token, so params = FLOPs/2 = r (d_in + d_out + b_in b_out).
BLAST contains low rank (b = 1) and block-diagonal matrices (b_in = b_out, r = p = q,
s_ji = 0 off the diagonal). There is no closed-form projection: ``project`` runs the paper's
preconditioned alternating gradient descent, from an algebraic start exact for members.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from structured.base import (Core, StructuredLinear, StructureError, bmm, check_fraction,
                             check_int, einsum, init_core, nearest_valid)
from structured.low_rank import svd_split


class Blast(StructuredLinear):
  kind = "blast"

  def __init__(self, d_in: int, d_out: int, *, blocks: int = 2, blocks_out: int | None = None,
               rank: int | None = None, rank_frac: float | None = None, use_bias: bool = False,
               role: str = "hidden", rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    sides = [("blocks", blocks, "d_in", d_in),
             ("blocks" if blocks_out is None else "blocks_out",
              blocks if blocks_out is None else blocks_out, "d_out", d_out)]
    counts = []
    for name, b, side, d in sides:
      counts.append(b := check_int(self.kind, name, b, 1))
      if d % b:
        raise StructureError(f"{self.kind} {name}={b} must divide {side}={d}; nearest valid "
                             f"{side}: {nearest_valid(d, lambda w: w % b == 0)}")
    limit = min(d_in, d_out)
    self.b_in, self.b_out = counts
    if rank is not None and rank_frac is not None:
      raise StructureError(f"{self.kind} rank={rank!r}, rank_frac={rank_frac!r}: give rank (int) "
                           "or rank_frac (in (0, 1]), not both")
    if rank_frac is not None:
      rank_frac = check_fraction(self.kind, "rank_frac", rank_frac)
      rank = math.ceil(rank_frac * min(d_in // self.b_in, d_out // self.b_out))   # grows with width
    rank = 4 if rank is None else rank
    self.rank = rank = check_int(self.kind, "rank", rank, 1, limit, "min(d_in, d_out)")
    self.p, self.q = d_in // self.b_in, d_out // self.b_out
    shapes = {"v": (self.b_in, self.p, rank), "s": (self.b_in, self.b_out, rank),
              "u": (self.b_out, rank, self.q)}
    for core in self.cores():
      setattr(self, core.name, init_core(rngs, shapes[core.name], core.fan_in, core.fan_out))

  def _matmul(self, x):
    # each batched dot has its batch dim leading on both operands, the form every backend runs
    # (XLA:CPU's bf16 x bf16 -> f32 batched dot rejects other layouts; see masked.py)
    lead = x.shape[:-1]
    x_JxNxP = x.reshape(-1, self.b_in, self.p).transpose(1, 0, 2)
    z_JxNxR = bmm(x_JxNxP, self.v[...]).astype(x.dtype)
    w_RxNxI = einsum("rnj,rji->rni", z_JxNxR.transpose(2, 1, 0),
                     self.s[...].transpose(2, 0, 1)).astype(x.dtype)
    y_IxNxQ = bmm(w_RxNxI.transpose(2, 1, 0), self.u[...])
    return y_IxNxQ.transpose(1, 0, 2).reshape(*lead, self.d_out)

  def to_dense(self):
    return _blocks(self.v[...], self.s[...], self.u[...]).reshape(self.d_in, self.d_out)

  def flops_per_token(self):
    return 2 * self.rank * (self.d_in + self.d_out + self.b_in * self.b_out)

  def cores(self):
    """Input bases (p -> r per block), couplings, output bases (r -> q per block).

    The couplings are diagonal in the rank: for each rank channel they are a dense
    b_in -> b_out map (each output coordinate sums b_in inputs), so their fans are
    (b_in, b_out), not (b_in r, b_out r). With these fans ``init_core`` gives output RMS
    sqrt(min(1, r / p) min(1, b_out / b_in) min(1, q / r)) times the input's: O(1) in width
    when the rank grows with the block size p (a fixed rank is a bottleneck whose RMS falls
    like sqrt(r / p), as for low_rank at a fixed rank).
    """
    return (Core("v", self.p, self.rank), Core("s", self.b_in, self.b_out),
            Core("u", self.rank, self.q))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, steps: int = 100, delta: float = 0.1,
              warm_start: bool = True, **hparams):
    """Preconditioned alternating gradient descent (the paper's ``blast_precond_gd``).

    Minimises 1/2 ||W - W_hat||^2 over V, then U, then S, ``steps`` times. Each update is a
    gradient step of lr 1 preconditioned by (Gram + eps I)^-1, eps = delta ||W - W_hat||, on W
    normalised to unit std: the damped least-squares (ALS) update of that core, exact as
    eps -> 0. (The paper writes the loss without the 1/2 and decays lr from 1 to 0.01.)
    ``warm_start`` replaces the paper's small random start by two: ``_algebraic_start``, exact
    for members of the family (when r <= p, q), and the rank-r truncated SVD of W, itself a
    member (``_svd_start``); from the random start ALS often stalls in swamps (rel. error
    1e-4..3e-2 after 1000 steps on 64 x 144 members at b = 2). The descent runs from each
    start and the best of the starts and their results is kept, so the result is never worse
    than any start: with ``warm_start`` never worse than the truncated SVD, and finite for
    every finite W (the zero matrix included, where the preconditioner is singular). S carries
    W's scale. A local method: not optimal for other W.
    """
    layer = cls(*w_IxO.shape, rngs=rngs or nnx.Rngs(0), **hparams)
    w = np.asarray(w_IxO, np.float64)
    scale = w.std() + 1e-30
    w_JxPxIxQ = (w / scale).reshape(layer.b_in, layer.p, layer.b_out, layer.q)
    if warm_start:
      starts = [_svd_start(w_JxPxIxQ, layer.rank), _algebraic_start(w_JxPxIxQ, layer.rank)]
    else:   # the paper's init: B, C ~ 1e-3 N(0, 1/r), D ~ N(0, 1)
      rng, r = np.random.default_rng(0), layer.rank
      starts = [(1e-3 * r**-0.5 * rng.normal(size=layer.v.shape), rng.normal(size=layer.s.shape),
                 1e-3 * r**-0.5 * rng.normal(size=layer.u.shape))]
    target = jnp.asarray(w_JxPxIxQ, jnp.float32)
    candidates = []
    for start in (s for s in starts if s is not None):
      start = tuple(jnp.asarray(a, jnp.float32) for a in start)
      candidates += [start, _precond_gd(target, *start, steps, delta)]
    errors = [float(jnp.linalg.norm(target - _blocks(*vsu))) for vsu in candidates]
    best = min(range(len(candidates)), key=lambda i: (not np.isfinite(errors[i]), errors[i]))
    v, s, u = candidates[best]
    layer.v[...], layer.s[...], layer.u[...] = v, s * scale, u
    return layer


def _blocks(v_JxPxR, s_JxIxR, u_IxRxQ):
  """The [b_in, p, b_out, q] blocks V_j diag(s_ji) U_i."""
  return jnp.einsum("jpr,jir,irq->jpiq", v_JxPxR, s_JxIxR, u_IxRxQ)


def _svd_start(w_JxPxIxQ: np.ndarray, rank: int):
  """(V, S, U) of W's rank-r truncated SVD A B, a member of the family: V_j = A's rows of block
  j, U_i = B's columns of block i, S = 1."""
  b_in, p, b_out, q = w_JxPxIxQ.shape
  a_IxR, b_RxO = svd_split(jnp.asarray(w_JxPxIxQ.reshape(b_in * p, b_out * q)), rank)
  return (a_IxR.reshape(b_in, p, rank), jnp.ones((b_in, b_out, rank)),
          b_RxO.reshape(rank, b_out, q).transpose(1, 0, 2))


def _algebraic_start(w_JxPxIxQ: np.ndarray, rank: int):
  """(V, S, U) reproducing any member of the family (generic cores); None unless r <= p, q.

  Block row j of a member spans V_j and block column i spans U_i, so the top-r singular
  vectors give bases Q_j, P_i with V_j = Q_j M_j, U_i = N_i P_i, and the r x r cores
  C_ji = Q_j^T W_ji P_i^T = M_j D_ji N_i. Then C_1i C_0i^-1 = M_1 (D_1i D_0i^-1) M_0^-1, so every
  (C_10 C_00^-1)^-1 C_1i C_0i^-1 = M_0 (diagonal) M_0^-1: M_0 is the eigenbasis of a random
  combination of them (Jennrich's simultaneous diagonalisation). With M_0 and D_0i = D_j0 = 1
  (the scale freedom), N_i = M_0^-1 C_0i, M_j = C_j0 N_0^-1 and D_ji = diag(M_j^-1 C_ji N_i^-1).
  For a W outside the family it is only a starting point. Host numpy in float64: r x r
  eigenproblems, and non-symmetric eig has no accelerator lowering on every backend.
  """
  b_in, p, b_out, q = w_JxPxIxQ.shape
  if rank > min(p, q):
    return None
  inv = np.linalg.pinv
  bases_in = np.linalg.svd(w_JxPxIxQ.reshape(b_in, p, b_out * q), full_matrices=False)[0]
  bases_out = np.linalg.svd(w_JxPxIxQ.transpose(2, 0, 1, 3).reshape(b_out, b_in * p, q),
                            full_matrices=False)[2]
  q_JxPxR, p_IxRxQ = bases_in[..., :rank], bases_out[:, :rank]
  c_JxIxRxR = np.einsum("jpr,jpiq,isq->jirs", q_JxPxR, w_JxPxIxQ, p_IxRxQ, optimize=True)
  m0 = np.eye(rank)
  if b_in > 1 and b_out > 1:   # else any M_0 works
    x_IxRxR = c_JxIxRxR[1] @ inv(c_JxIxRxR[0])
    mix = np.random.default_rng(0).normal(size=b_out)
    m0 = np.real(np.linalg.eig(np.einsum("i,irs->rs", mix, inv(x_IxRxR[0]) @ x_IxRxR))[1])
  n_IxRxR = inv(m0) @ c_JxIxRxR[0]
  m_JxRxR = c_JxIxRxR[:, 0] @ inv(n_IxRxR[0])
  d_JxIxR = np.einsum("jrs,jist,itr->jir", inv(m_JxRxR), c_JxIxRxR, inv(n_IxRxR), optimize=True)
  return q_JxPxR @ m_JxRxR, d_JxIxR, n_IxRxR @ p_IxRxQ


@jax.jit
def _precond_gd(w_JxPxIxQ, v_JxPxR, s_JxIxR, u_IxRxQ, steps, delta):
  """``steps`` cycles of V -> U -> S preconditioned gradient steps (lr 1)."""
  eye = jnp.eye(v_JxPxR.shape[-1])

  def damping(v, s, u):
    return delta * jnp.linalg.norm(w_JxPxIxQ - _blocks(v, s, u)) * eye

  def step(_, vsu):
    v, s, u = vsu
    # V_j <- V_j - G_j (P_j + eps)^-1, G_j = -sum_i R_ji U_i^T D_ji, P_j = sum_i D U U^T D
    r = w_JxPxIxQ - _blocks(v, s, u)
    grad = -jnp.einsum("jpiq,irq,jir->jpr", r, u, s)
    gram = jnp.einsum("jir,irq,iRq,jiR->jrR", s, u, u, s)
    v = v - jnp.linalg.solve(gram + damping(v, s, u), grad.transpose(0, 2, 1)).transpose(0, 2, 1)
    # U_i <- U_i - (Q_i + eps)^-1 G_i, G_i = -sum_j D_ji V_j^T R_ji, Q_i = sum_j D V^T V D
    r = w_JxPxIxQ - _blocks(v, s, u)
    grad = -jnp.einsum("jir,jpr,jpiq->irq", s, v, r)
    gram = jnp.einsum("jir,jpr,jpR,jiR->irR", s, v, v, s)
    u = u - jnp.linalg.solve(gram + damping(v, s, u), grad)
    # s_ji <- s_ji - ((V_j^T V_j) * (U_i U_i^T) + eps)^-1 g_ji, g_ji = -diag(V_j^T R_ji U_i^T)
    r = w_JxPxIxQ - _blocks(v, s, u)
    grad = -jnp.einsum("jpr,jpiq,irq->jir", v, r, u)
    gram = jnp.einsum("jpr,jpR->jrR", v, v)[:, None] * jnp.einsum("irq,iRq->irR", u, u)[None]
    s = s - jnp.linalg.solve(gram + damping(v, s, u), grad[..., None])[..., 0]
    return v, s, u

  return jax.lax.fori_loop(0, steps, step, (v_JxPxR, s_JxIxR, u_IxRxQ))
