"""Scaling-law fits: L(C) = E + A C^-alpha per family and Chinchilla's L(N, D) (Approach 3).

Both are fitted in log-sum-exp form (log L = LSE(e, a - alpha log C), E = exp e, A = exp a),
minimising the **summed** Huber loss (delta 1e-3) on log-loss residuals from a grid of starts
with tight-tolerance least squares (``analysis.solver``), as Besiroglu et al. (2024) did to
correct Hoffmann et al. Passing ``weights_BxN`` (point counts, one row per bootstrap resample)
or ``resampled_BxN`` refits B problems from the full fit's optimum; the results then hold
arrays of shape [B].
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd

from analysis import solver
from analysis.runs import AnalysisError

# Hoffmann et al.'s Approach-3 start grid, as (a, b, e, alpha, beta): 6 x 6 x 5 x 5 x 5 = 4,500.
HOFFMANN_GRID = np.array(list(itertools.product(
    np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
    np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))))


def _col(v):
  """Scalar -> scalar, [B] -> [B, 1]: broadcast fitted parameters against a query axis."""
  v = np.asarray(v, float)
  return v[..., None] if v.ndim else v


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(C) = E + A C^-alpha; fields are floats, or [B] arrays for a batch of fits."""

  E: float | np.ndarray
  A: float | np.ndarray
  alpha: float | np.ndarray
  objective: float | np.ndarray = np.nan
  converged: bool | np.ndarray = True
  starts: np.ndarray | None = dataclasses.field(default=None, repr=False)  # local optima, [K, P]

  def loss(self, compute):
    """Predicted loss, shape [..., len(compute)]."""
    return _col(self.E) + _col(self.A) * np.asarray(compute, float) ** -_col(self.alpha)

  def compute_to_reach(self, loss):
    """C(L) = (A / (L - E))^(1/alpha); inf where L <= E (never reached)."""
    gap = np.asarray(loss, float) - _col(self.E)
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.where(gap > 0, (_col(self.A) / gap) ** (1 / _col(self.alpha)), np.inf)


@dataclasses.dataclass(frozen=True)
class Chinchilla:
  """L(N, D) = E + A / N^alpha + B / D^beta (N parameters, D training tokens or examples)."""

  E: float | np.ndarray
  A: float | np.ndarray
  B: float | np.ndarray
  alpha: float | np.ndarray
  beta: float | np.ndarray
  objective: float | np.ndarray = np.nan
  converged: bool | np.ndarray = True
  starts: np.ndarray | None = dataclasses.field(default=None, repr=False)  # local optima, [K, P]

  def loss(self, n_params, n_data):
    with np.errstate(invalid="ignore", over="ignore"):   # a degenerate draw's term: nan
      return (_col(self.E) + _col(self.A) * np.asarray(n_params, float) ** -_col(self.alpha)
              + _col(self.B) * np.asarray(n_data, float) ** -_col(self.beta))

  def compute_optimal(self, compute, flops_per_param_datum: float = 6.0):
    """(N_opt, D_opt) minimising L under C = 6 N D (Hoffmann et al., eq. 4)."""
    alpha, beta = _col(self.alpha), _col(self.beta)
    g = (alpha * _col(self.A) / (beta * _col(self.B))) ** (1 / (alpha + beta))
    c = np.asarray(compute, float) / flops_per_param_datum
    return g * c ** (beta / (alpha + beta)), c ** (alpha / (alpha + beta)) / g

  def frontier(self, flops_per_param_datum: float = 6.0) -> PowerLaw:
    """The least loss reachable at compute C = 6 N D, exactly a power law: L*(C) = E + G C^-a,
    a = alpha beta / (alpha + beta), G = (A g^-alpha + B g^beta) 6^a (g as in compute_optimal)."""
    alpha, beta = np.asarray(self.alpha, float), np.asarray(self.beta, float)
    g = (alpha * self.A / (beta * self.B)) ** (1 / (alpha + beta))
    a = alpha * beta / (alpha + beta)
    G = (self.A * g**-alpha + self.B * g**beta) * flops_per_param_datum**a
    return PowerLaw(self.E, G, a, self.objective, self.converged)


def _log_sum_exp(terms, dterms):
  """log sum_k exp(terms_k) and its jacobian sum_k softmax_k dterms_k ([..., N, P]); a dterm
  entry is an array or the int 0 or 1 (constant derivatives: no product is formed for them)."""
  terms = np.broadcast_arrays(*terms)
  top = np.max(terms, axis=0)
  w = [np.exp(t - top) for t in terms]
  total = sum(w)
  p = [wk / total for wk in w]
  columns = []
  for j in range(len(dterms[0])):
    parts = [pk * dk[j] if not isinstance(dk[j], int) else pk
             for pk, dk in zip(p, dterms) if not isinstance(dk[j], int) or dk[j]]
    columns.append(sum(parts[1:], parts[0]) if parts else np.zeros_like(top))
  return top + np.log(total), np.stack(np.broadcast_arrays(*columns), -1)


def power_law_log(theta_P, log_c_N):
  """log L(C) = LSE(e, a - alpha log C) and its jacobian in (e, a, alpha); ``theta`` may be
  [P, S, 1] to evaluate S parameter sets at once."""
  e, a, alpha = theta_P
  return _log_sum_exp([e + np.zeros_like(log_c_N), a - alpha * log_c_N],
                      [(1, 0, 0), (0, 1, -log_c_N)])


def chinchilla_log(theta_P, x):
  """log L(N, D) = LSE(a - alpha log N, b - beta log D, e) and its jacobian in
  (a, b, e, alpha, beta)."""
  a, b, e, alpha, beta = theta_P
  log_n, log_d = x
  return _log_sum_exp([a - alpha * log_n, b - beta * log_d, e + np.zeros_like(log_n)],
                      [(1, 0, 0, -log_n, 0), (0, 1, 0, 0, -log_d), (0, 0, 1, 0, 0)])


def power_law_grid(log_c_N, log_l_N) -> np.ndarray:
  """Starts (e, a, alpha): E a fraction of the least loss, alpha from 0.02 to 2, and A set so
  the power term matches a range of excess losses at the median compute."""
  es = np.log(np.exp(log_l_N.min()) * np.array([0.05, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]))
  alphas = np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0])
  excess = np.log(np.exp(np.median(log_l_N)) * np.array([0.01, 0.1, 0.5, 1.0]))
  mid_c = np.median(log_c_N)
  return np.array([(e, x + alpha * mid_c, alpha)
                   for e, alpha, x in itertools.product(es, alphas, excess)])


def chinchilla_grid(log_n_N, log_d_N, log_l_N) -> np.ndarray:
  """Starts (a, b, e, alpha, beta) for one family's L(N, D), 1,125 rather than Hoffmann's 4,500:
  E a fraction of the least loss, exponents 0.1 to 1.5, and A, B set so each term matches a
  range of excess losses at the median N and D (Hoffmann's fixed a, b grid assumes their scale)."""
  least, typical = np.exp(log_l_N.min()), np.exp(np.median(log_l_N))
  es = np.log(least * np.array([0.1, 0.5, 0.8, 0.9, 0.97]))
  exps = np.array([0.1, 0.25, 0.5, 0.8, 1.5])
  excess = np.log(typical * np.array([0.05, 0.3, 1.0]))
  mid_n, mid_d = np.median(log_n_N), np.median(log_d_N)
  return np.array([(x + alpha * mid_n, z + beta * mid_d, e, alpha, beta)
                   for e, alpha, beta, x, z in itertools.product(es, exps, exps, excess, excess)])


def multistart(predict, grid_SxP, x, log_l_N, keep: int = 16) -> solver.Solution:
  """Scores every start of the grid, polishes the ``keep`` best to convergence.

  Returns those solutions, best first (row 0 is the fit; the rest warm-start refits).
  """
  scores = solver.grid_objectives(predict, grid_SxP, x, log_l_N)[0]
  order = np.argsort(np.nan_to_num(scores, nan=np.inf))[:keep]
  sol = solver.minimize(predict, np.asarray(grid_SxP)[order], x, log_l_N)
  order = np.argsort(np.nan_to_num(sol.objective_S, nan=np.inf))
  return solver.Solution(*(a[order] for a in sol))


def refit(predict, starts_KxP, x, log_l, weights_BxN) -> solver.Solution:
  """Best of the ``starts`` (a full-data fit's local optima) under each weighting, [B];
  ``log_l`` is [N], or [B, N] for each problem's own (resampled) observations."""
  starts_KxP, weights = np.atleast_2d(starts_KxP), np.asarray(weights_BxN, float)
  (b, n), k = weights.shape, len(starts_KxP)
  log_l_BxN = np.broadcast_to(np.asarray(log_l, float), (b, n))
  sol = solver.minimize(predict, np.tile(starts_KxP, (b, 1)), x, np.repeat(log_l_BxN, k, axis=0),
                        np.repeat(weights, k, axis=0))
  obj_BxK = np.nan_to_num(sol.objective_S, nan=np.inf).reshape(b, k)
  best = np.arange(b) * k + np.argmin(obj_BxK, axis=1)
  return solver.Solution(*(a[best] for a in sol))


def _distinct(theta_KxP, n: int) -> np.ndarray:
  """Up to ``n`` rows of ``theta`` (best first) that differ by > 1e-3 in some coordinate."""
  chosen = [theta_KxP[0]]
  for row in theta_KxP[1:]:
    if len(chosen) < n and np.all([np.max(np.abs(row - c)) > 1e-3 for c in chosen]):
      chosen.append(row)
  return np.array(chosen)


def _solve(predict, grid, x, log_l, weights_BxN, warm_starts, log_l_BxN=None):
  """Full fit (returns the fit's row and its distinct local optima) or batched refits: under
  ``weights_BxN`` and/or on resampled observations ``log_l_BxN``."""
  if weights_BxN is None and log_l_BxN is None:
    sol = multistart(predict, grid, x, log_l)
    return solver.Solution(*(a[0] for a in sol)), _distinct(sol.theta_SxP[np.isfinite(sol.objective_S)], 1)
  if warm_starts is None:
    warm_starts = _solve(predict, grid, x, log_l, None, None)[1]
  if weights_BxN is None:
    weights_BxN = np.ones(np.shape(log_l_BxN))
  return refit(predict, warm_starts, x, log_l if log_l_BxN is None else log_l_BxN,
               weights_BxN), warm_starts


def _finite_positive(*arrays, need: int):
  arrays = [np.asarray(a, float) for a in arrays]
  ok = np.all([np.isfinite(a) & (a > 0) for a in arrays], axis=0)
  if ok.sum() < need:
    raise AnalysisError(f"this fit needs >= {need} points with finite positive values, "
                        f"got {int(ok.sum())}")
  return ok, [a[ok] for a in arrays]


def _resampled(loss_BxN, ok):
  return None if loss_BxN is None else np.log(np.asarray(loss_BxN, float)[:, ok])


def fit_power_law(compute, loss, weights_BxN=None, warm: PowerLaw | None = None,
                  resampled_BxN=None) -> PowerLaw:
  """Fits L(C) = E + A C^-alpha to (compute, loss) points; needs at least 3 points.

  With ``weights_BxN`` (bootstrap resamples) and/or ``resampled_BxN`` (B sets of resampled
  losses at the same points) refits B problems from ``warm.starts``.
  """
  ok, (compute, loss) = _finite_positive(compute, loss, need=3)
  log_c, log_l = np.log(compute), np.log(loss)
  weights = None if weights_BxN is None else np.asarray(weights_BxN, float)[:, ok]
  sol, starts = _solve(power_law_log, power_law_grid(log_c, log_l), log_c, log_l, weights,
                       None if warm is None else warm.starts, _resampled(resampled_BxN, ok))
  e, a, alpha = np.moveaxis(sol.theta_SxP, -1, 0)
  return PowerLaw(np.exp(e), np.exp(a), alpha, sol.objective_S, sol.converged_S, starts)


def fit_chinchilla(n_params, n_data, loss, weights_BxN=None, warm: Chinchilla | None = None,
                   grid_SxP: np.ndarray = HOFFMANN_GRID, resampled_BxN=None) -> Chinchilla:
  """Approach 3: fits L(N, D) = E + A/N^alpha + B/D^beta from Hoffmann's start grid.

  With ``weights_BxN`` (bootstrap resamples) and/or ``resampled_BxN`` (B sets of resampled
  losses) refits B problems from ``warm.starts``.
  """
  ok, (n_params, n_data, loss) = _finite_positive(n_params, n_data, loss, need=6)
  x, log_l = (np.log(n_params), np.log(n_data)), np.log(loss)
  weights = None if weights_BxN is None else np.asarray(weights_BxN, float)[:, ok]
  sol, starts = _solve(chinchilla_log, grid_SxP, x, log_l, weights,
                       None if warm is None else warm.starts, _resampled(resampled_BxN, ok))
  a, b, e, alpha, beta = np.moveaxis(sol.theta_SxP, -1, 0)
  with np.errstate(over="ignore"):   # a term fitted to ~0 has a huge log-coefficient: inf, harmless
    E, A, B = np.exp(e), np.exp(a), np.exp(b)
  return Chinchilla(E, A, B, alpha, beta, sol.objective_S,
                    sol.converged_S, starts)


def isoflop(n_params, compute, loss, min_sizes: int = 3, decimals: int = 1):
  """Approach 2: per compute budget (C rounded to ``decimals`` in log10), a parabola of loss vs
  log N gives N*(C); a line through log N* vs log C gives N_opt ~ C^a.

  Returns (budgets DataFrame with columns compute, n_opt, loss_opt; exponent a; intercept).
  Budgets with fewer than ``min_sizes`` model sizes or a parabola without an interior minimum
  are skipped; raises AnalysisError if fewer than 2 budgets remain.
  """
  df = pd.DataFrame({"n": np.asarray(n_params, float), "c": np.asarray(compute, float),
                     "loss": np.asarray(loss, float)}).dropna()
  df["budget"] = np.round(np.log10(df["c"]), decimals)
  rows = []
  for _, g in df.groupby("budget"):
    if g["n"].nunique() < min_sizes:
      continue
    log_n = np.log(g["n"].to_numpy())
    c2, c1, c0 = np.polyfit(log_n, g["loss"].to_numpy(), 2)
    vertex = -c1 / (2 * c2)
    if c2 <= 0 or not log_n.min() <= vertex <= log_n.max():
      continue
    rows.append({"compute": float(np.exp(np.log(g["c"]).mean())), "n_opt": float(np.exp(vertex)),
                 "loss_opt": float(c0 - c1**2 / (4 * c2))})
  budgets = pd.DataFrame(rows, columns=["compute", "n_opt", "loss_opt"])
  if len(budgets) < 2:
    raise AnalysisError(f"isoFLOP fit needs >= 2 budgets with >= {min_sizes} model sizes and an "
                        f"interior loss minimum, found {len(budgets)}")
  slope, intercept = np.polyfit(np.log(budgets["compute"]), np.log(budgets["n_opt"]), 1)
  return budgets, float(slope), float(intercept)


def holdout(compute, loss, cut: float) -> dict:
  """Fits L(C) on points with compute <= ``cut`` and scores it on the points above.

  Returns the fit, the held-out points' log errors and their RMSLE (root-mean-square log error).
  """
  compute, loss = np.asarray(compute, float), np.asarray(loss, float)
  below, above = compute <= cut, compute > cut
  if not above.any():
    raise AnalysisError(f"no points above the hold-out cut {cut:.3g}")
  fit = fit_power_law(compute[below], loss[below])
  log_err = np.log(fit.loss(compute[above])) - np.log(loss[above])
  return {"fit": fit, "compute": compute[above], "log_error": log_err,
          "rmsle": float(np.sqrt(np.mean(log_err**2)))}
