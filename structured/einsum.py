"""The einsum θ-space of Einsum Search (Potapczynski et al. 2024): one family spanning dense,
low-rank, Kronecker and BTT.

θ = (α, β, γ, δ, ε, φ, ρ) in [0, 1]^7 with α+β+γ = 1 and δ+ε+φ = 1 sets the integer dims
``dims = (a, b, g, d, e, f, r)``: d_in = a·b·g, d_out = d·e·f, rank r. The input is viewed as
x[g, b, a] and the output as y[f, e, d]:

  Z[f, d, r, g, b] = sum_a        x[g, b, a]       A[f, d, r, g, a]
  y[f, e, d]       = sum_{r,g,b}  Z[f, d, r, g, b] B[f, e, r, g, b]

so params = r g f (a d + b e) and MACs = r b g d f (a + e). The corners: 'dense'
(1,0,0,0,0,1,0), 'low_rank' (1,0,0,0,1,0,0), 'kronecker' (½,½,0,½,½,0,0), 'btt'
(½,0,½,0,½,½,0) (rank 1 for ρ = 0; ES `experiments/gpt.sh`).

θ -> dims, without silent rounding: the real-valued targets are d_in^α, d_in^β, d_in^γ (and
likewise for d_out), r = round(min(d_in, d_out)^ρ). Of the ordered integer factorizations with
the exact product, the closest to the targets in log space wins; ties go to the fewest MACs,
then the fewest params. Every factor must lie within 2x of its target (true for any θ at a
power of two), else StructureError names the nearest widths that work. The chosen dims are
``layer.dims`` and show in ``repr``. ``dims=`` gives them explicitly instead of θ.

The rank is at most min(a·d, b·e): each (f, g) slice of W is a sum of r Kronecker products of
an [a, d] and a [b, e] matrix, i.e. a rank-r matrix once rearranged to [(a d), (b e)], so more
terms add parameters, not expressiveness (at the btt corner this is btt's own bound min(m_0,
n_1), at the low_rank corner min(d_in, d_out)); a θ or ``dims`` asking for more is an error.

A core that contracts nothing and creates nothing (A at γ = 1 with r = f = d = 1, B at φ = 1
with r = g = b = e = 1) is only a diagonal rescaling the other core absorbs: it is left out,
so the dense corner is exactly dense (ES would train it as extra parameters).

``cores()`` follows ES: A has fan-in a (α), fan-out d·f·r (δφρ); B has fan-in b·g·r (βγρ),
fan-out e (ε), i.e. contracted axes are fan-in, created axes fan-out, batch axes neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from structured.base import Core, StructuredLinear, StructureError, einsum, init_core, nearest_valid

GREEK = ("α", "β", "γ", "δ", "ε", "φ", "ρ")
CORNERS = {"dense": (1, 0, 0, 0, 0, 1, 0), "low_rank": (1, 0, 0, 0, 1, 0, 0),
           "kronecker": (.5, .5, 0, .5, .5, 0, 0), "btt": (.5, 0, .5, 0, .5, .5, 0)}
_SUM_TOL = 1e-6


def resolve_theta(theta) -> tuple[float, ...]:
  """θ as 7 floats from a corner name or a sequence; any malformed θ is one StructureError."""
  if isinstance(theta, str):
    if theta not in CORNERS:
      raise StructureError(f"einsum theta='{theta}' is unknown; valid names: {sorted(CORNERS)} "
                           f"or 7 numbers {GREEK}")
    return tuple(float(t) for t in CORNERS[theta])
  try:
    values = tuple(float(t) for t in theta)
  except (TypeError, ValueError):
    raise StructureError(f"einsum theta={theta!r} must be a corner name {sorted(CORNERS)} or 7 "
                         f"numbers {GREEK}") from None
  problems = []
  if len(values) != 7:
    problems.append(f"has {len(values)} entries, needs 7 {GREEK}")
  elif not all(0 <= t <= 1 for t in values):
    problems.append("entries must lie in [0, 1]")
  elif abs(sum(values[:3]) - 1) > _SUM_TOL or abs(sum(values[3:6]) - 1) > _SUM_TOL:
    problems.append(f"needs α+β+γ = 1 and δ+ε+φ = 1, got {sum(values[:3]):.6g} and "
                    f"{sum(values[3:6]):.6g}")
  if problems:
    raise StructureError(f"einsum theta={tuple(theta)}: {problems[0]}; corner names: "
                         f"{sorted(CORNERS)}")
  return values


def _divisors(d: int) -> list[int]:
  small = [k for k in range(1, math.isqrt(d) + 1) if d % k == 0]
  return sorted(set(small + [d // k for k in small]))


def _ordered_triples(d: int) -> list[tuple[int, int, int]]:
  return [(i, j, d // (i * j)) for i in _divisors(d) for j in _divisors(d // i)]


def _log_dist(ks: Sequence[int], exps: Sequence[float], d: int) -> float:
  return sum((math.log(k) - t * math.log(d)) ** 2 for k, t in zip(ks, exps))


def closest_triples(d: int, exps: Sequence[float]) -> list[tuple[int, int, int]]:
  """The factorizations d = k1 k2 k3 closest (log space) to (d^e1, d^e2, d^e3); all ties."""
  triples = _ordered_triples(d)
  dists = [_log_dist(t, exps, d) for t in triples]
  best = min(dists)
  return [t for t, dist in zip(triples, dists) if dist <= best + 1e-9]


def _within_2x(ks: Sequence[int], exps: Sequence[float], d: int) -> bool:
  return all(abs(math.log2(k) - t * math.log2(d)) < 1 for k, t in zip(ks, exps))


def _cost(dims: Sequence[int]) -> tuple[int, int]:
  a, b, g, d, e, f, r = dims
  return (r * b * g * d * f * (a + e), r * g * f * (a * d + b * e))


def dims_for(d_in: int, d_out: int, theta: Sequence[float], name: str = "") -> tuple[int, ...]:
  """The integer (a, b, g, d, e, f, r) of θ at d_in -> d_out (see the module docstring);
  ``name`` is the corner name θ was given by, shown in errors."""
  shown = f"{name!r} = {tuple(theta)}" if name else f"{tuple(theta)}"
  sides = []
  for side, width, exps in (("d_in", d_in, theta[:3]), ("d_out", d_out, theta[3:6])):
    closest = closest_triples(width, exps)
    cands = [k for k in closest if _within_2x(k, exps, width)]
    if not cands:
      ok = lambda w: any(_within_2x(k, exps, w) for k in closest_triples(w, exps))
      targets = tuple(round(width**t, 2) for t in exps)
      raise StructureError(
          f"einsum theta={shown} cannot split {side}={width}: the closest exact "
          f"factorization {closest[0]} is not within 2x of the target dims {targets}; nearest "
          f"valid widths: {nearest_valid(width, ok)}")
    sides.append(cands)
  rank = max(1, round(min(d_in, d_out) ** theta[6]))
  pairs = [(*i, *o, rank) for i in sides[0] for o in sides[1]]
  return min(pairs, key=lambda dims: (_cost(dims), dims))


def _check_rank(dims: Sequence[int], spec: str) -> None:
  """Rejects a rank above min(a·d, b·e), the most a slice of W can use (module docstring)."""
  a, b, g, d, e, f, r = dims
  if r > min(a * d, b * e):
    raise StructureError(f"einsum {spec} gives rank r={r} above min(a*d, b*e)="
                         f"{min(a * d, b * e)} for dims (a, b, g, d, e, f) = {tuple(dims[:6])}; "
                         "higher ranks add parameters without adding expressiveness")


def _check_dims(d_in: int, d_out: int, dims) -> tuple[int, ...]:
  ints = tuple(dims) if isinstance(dims, Sequence) else ()
  if (len(ints) != 7 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                for k in ints)
      or math.prod(ints[:3]) != d_in or math.prod(ints[3:6]) != d_out):
    raise StructureError(f"einsum dims={dims!r} must be 7 positive ints (a, b, g, d, e, f, r) "
                         f"with a*b*g = d_in = {d_in} and d*e*f = d_out = {d_out}")
  return ints


class Einsum(StructuredLinear):
  kind = "einsum"

  def __init__(self, d_in: int, d_out: int, *, theta: str | Sequence[float] | None = None,
               dims: Sequence[int] | None = None, use_bias: bool = False, role: str = "hidden",
               rngs: nnx.Rngs):
    super().__init__(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    if theta is not None and dims is not None:
      raise StructureError(f"einsum theta={theta!r}, dims={dims!r}: give theta (a corner name or "
                           "7 numbers) or dims (7 ints), not both")
    if dims is None:
      theta = "btt" if theta is None else theta
      self.theta = resolve_theta(theta)
      self.dims = dims_for(d_in, d_out, self.theta, theta if isinstance(theta, str) else "")
    else:
      self.dims = _check_dims(d_in, d_out, dims)
      self.theta = self._implied_theta()
    _check_rank(self.dims, f"dims={self.dims}" if dims is not None
                else f"theta={theta!r} = {self.theta}" if isinstance(theta, str)
                else f"theta={self.theta}")
    a, b, g, d, e, f, r = self.dims
    # A diagonal-only core (nothing contracted, nothing created) is absorbed by the other one.
    self.has_a = a * f * d * r > 1 or b * g * e * r == 1
    self.has_b = b * g * e * r > 1
    self.A = init_core(rngs, (f, d, r, g, a), a, d * f * r) if self.has_a else None
    self.B = init_core(rngs, (f, e, r, g, b), b * g * r, e) if self.has_b else None

  def _implied_theta(self) -> tuple[float, ...]:
    a, b, g, d, e, f, r = self.dims
    log = lambda k, n: math.log(k) / math.log(n) if n > 1 else 0.0
    return (*(log(k, self.d_in) for k in (a, b, g)), *(log(k, self.d_out) for k in (d, e, f)),
            log(r, min(self.d_in, self.d_out)))

  def __repr__(self):
    names = ("a", "b", "g", "d", "e", "f", "r")
    shown = ", ".join(f"{n}={k}" for n, k in zip(names, self.dims))
    theta = ", ".join(f"{t:.3g}" for t in self.theta)
    return f"Einsum({self.d_in}->{self.d_out}, theta=({theta}), dims: {shown})"

  def _matmul(self, x):
    a, b, g, d, e, f, r = self.dims
    lead = x.shape[:-1]
    x_GxBxA = x.reshape(*lead, g, b, a)
    if self.has_a:
      z = einsum("...gba,fdrga->...fdrgb", x_GxBxA, self.A[...])
    else:   # A is the identity on g (d = f = r = a = 1)
      z = x_GxBxA.reshape(*lead, f, d, r, g, b)
    if not self.has_b:   # B is the identity on f (e = r = g = b = 1)
      return z.reshape(*lead, self.d_out)
    y = einsum("...fdrgb,fergb->...fed", z.astype(x.dtype), self.B[...])
    return y.reshape(*lead, self.d_out)

  def to_dense(self):
    a, b, g, d, e, f, r = self.dims
    core_a = self.A[...] if self.has_a else jnp.ones((f, d, r, g, a))
    core_b = self.B[...] if self.has_b else jnp.ones((f, e, r, g, b))
    w = jnp.einsum("fdrga,fergb->gbafed", core_a, core_b)
    return w.reshape(self.d_in, self.d_out)

  def flops_per_token(self):
    a, b, g, d, e, f, r = self.dims
    return 2 * (self.has_a * f * d * r * g * b * a + self.has_b * f * e * d * r * g * b)

  def cores(self):
    a, b, g, d, e, f, r = self.dims
    return (((Core("A", a, d * f * r),) if self.has_a else ())
            + ((Core("B", b * g * r, e),) if self.has_b else ()))

  @classmethod
  def from_layer(cls, layer: StructuredLinear) -> "Einsum":
    """The einsum layer applying the same matrix as a dense, low_rank, 2-factor kronecker, btt or
    monarch layer, with its cores copied in (at its own dims, so the factorization matches)."""
    kind, d_in, d_out = layer.kind, layer.d_in, layer.d_out
    if kind == "dense":
      dims = (d_in, 1, 1, 1, 1, d_out, 1)
      cores = {"A": layer.w[...].T.reshape(d_out, 1, 1, 1, d_in)}
    elif kind == "low_rank":
      r = layer.rank
      dims = (d_in, 1, 1, 1, d_out, 1, r)
      cores = {"A": layer.u[...].T.reshape(1, 1, r, 1, d_in),
               "B": layer.v[...].T.reshape(1, d_out, r, 1, 1)}
    elif kind == "kronecker" and len(layer.a) == 2:   # x[a1, a2] = x[b, a], y[b1, b2] = y[e, d]
      (a1, a2), (b1, b2) = layer.a, layer.b
      dims = (a2, a1, 1, b2, b1, 1, 1)
      cores = {"A": layer.f1[...].T.reshape(1, b2, 1, 1, a2),
               "B": layer.f0[...].T.reshape(1, b1, 1, 1, a1)}
    elif kind in ("btt", "monarch") and len(layer.ms) == 2:
      # x[m2, m1] = x[g, a], y[n1, n2] = y[f, e]
      (m1, m2), (n1, n2), r = layer.ms, layer.ns, layer.rank
      dims = (m1, 1, m2, 1, n2, n1, r)
      cores = {"A": layer.w0[...].transpose(3, 2, 0, 1)[:, None],     # [n1, 1, r, m2, m1]
               "B": layer.w1[...].transpose(0, 3, 2, 1)[..., None]}   # [n1, n2, r, m2, 1]
    else:
      raise StructureError(f"einsum copies the cores of dense, low_rank and 2-factor kronecker, "
                           f"btt and monarch layers, not of this '{kind}' layer")
    if layer.bias is not None:
      cores["bias"] = layer.bias[...]
    # Built abstractly (no random init to compile and throw away), then given the copied cores.
    out = nnx.eval_shape(lambda: cls(d_in, d_out, dims=dims, use_bias=layer.bias is not None,
                                     role=layer.role, rngs=nnx.Rngs(0)))
    for name, value in cores.items():
      setattr(out, name, nnx.Param(value))
    return out

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs=None, theta=None, dims=None, **hparams):
    """Only at a corner θ: the corner family's projection (``hparams`` are that family's, e.g.
    rank for btt), its cores copied in by ``from_layer``."""
    from structured.registry import family   # the registry imports this module
    if dims is None and theta is None:
      theta = "btt"
    corner = None if dims is not None else next(
        (n for n in CORNERS if resolve_theta(theta) == resolve_theta(n)), None)
    if corner is None:
      raise StructureError(f"einsum projection exists only at the corners theta in "
                           f"{sorted(CORNERS)} (delegated to that family); got "
                           f"theta={theta}, dims={dims}")
    return cls.from_layer(family(corner).project(w_IxO, rngs=rngs, **hparams))
