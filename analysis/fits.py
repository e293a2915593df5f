"""Scaling-law fits: L(C) = E + A C^-alpha per family, bootstrap CIs, compute multipliers.

The fit minimises the **summed** Huber loss (delta = 1e-3) between predicted and observed
log-loss, with the prediction in log-sum-exp form log L = LSE(e, a - alpha log C)
(E = exp e, A = exp a), from a grid of starts refined by L-BFGS with tight tolerances:
averaging the Huber loss or stopping L-BFGS early is what biased Chinchilla's Approach 3
(Besiroglu et al. 2024).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
from scipy import optimize, special

from analysis.frontier import envelope
from analysis.runs import AnalysisError

HUBER_DELTA = 1e-3


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(C) = E + A C^-alpha, with the summed Huber objective it reached and convergence."""

  E: float
  A: float
  alpha: float
  objective: float
  converged: bool

  def loss(self, compute):
    return self.E + self.A * np.asarray(compute, float) ** -self.alpha

  def compute_to_reach(self, loss):
    """C(L) = (A / (L - E))^(1/alpha); inf where L <= E (never reached)."""
    gap = np.asarray(loss, float) - self.E
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.where(gap > 0, (self.A / gap) ** (1 / self.alpha), np.inf)


def huber(r, delta=HUBER_DELTA):
  abs_r = np.abs(r)
  return np.where(abs_r <= delta, 0.5 * r**2, delta * (abs_r - 0.5 * delta))


def _objective(theta, log_c, log_l):
  e, a, alpha = theta
  terms = np.stack([np.full_like(log_c, e), a - alpha * log_c])
  pred = special.logsumexp(terms, axis=0)
  r = pred - log_l
  w_e = np.exp(e - pred)
  dr = np.clip(r, -HUBER_DELTA, HUBER_DELTA)   # huber'(r)
  grad = np.array([np.sum(dr * w_e), np.sum(dr * (1 - w_e)), -np.sum(dr * (1 - w_e) * log_c)])
  return float(np.sum(huber(r))), grad


def _grid(log_c, log_l, n_best: int):
  """The ``n_best`` starts of a coarse (e, a, alpha) grid with the lowest objective."""
  e0 = log_l.min()
  es = e0 + np.log([0.05, 0.3, 0.6, 0.8, 0.9, 0.97])
  alphas = [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2]
  starts = []
  for e, alpha in itertools.product(es, alphas):
    # a such that the power term matches the excess loss at the median compute
    excess = np.maximum(np.exp(np.median(log_l)) - np.exp(e), 1e-6)
    starts.append((e, np.log(excess) + alpha * np.median(log_c), alpha))
  starts = np.array(starts)
  scores = [_objective(s, log_c, log_l)[0] for s in starts]
  return starts[np.argsort(scores)[:n_best]]


def fit_power_law(compute, loss, n_starts: int = 8, warm: PowerLaw | None = None) -> PowerLaw:
  """Fits L(C) = E + A C^-alpha to points (compute, loss); needs at least 3 points.

  ``warm`` (e.g. the fit on all data, when refitting a bootstrap resample) is tried first.
  """
  compute, loss = np.asarray(compute, float), np.asarray(loss, float)
  ok = np.isfinite(compute) & np.isfinite(loss) & (compute > 0) & (loss > 0)
  if ok.sum() < 3:
    raise AnalysisError(f"a power-law fit needs >= 3 finite points, got {int(ok.sum())}")
  log_c, log_l = np.log(compute[ok]), np.log(loss[ok])
  starts = list(_grid(log_c, log_l, n_starts))
  if warm is not None:
    starts.insert(0, np.array([np.log(warm.E), np.log(warm.A), warm.alpha]))
  best = None
  for start in starts:
    res = optimize.minimize(_objective, start, args=(log_c, log_l), jac=True, method="L-BFGS-B",
                            bounds=[(None, None), (None, None), (1e-4, 5.0)],
                            options=dict(ftol=1e-15, gtol=1e-12, maxiter=5000))
    if best is None or res.fun < best.fun:
      best = res
  e, a, alpha = best.x
  return PowerLaw(float(np.exp(e)), float(np.exp(a)), float(alpha), float(best.fun), bool(best.success))


def fit_frontier(df: pd.DataFrame, x: str = "flops", y: str = "eval_loss", **kwargs) -> PowerLaw:
  points = envelope(df, x, y)
  return fit_power_law(points[x], points[y], **kwargs)


def bootstrap(df: pd.DataFrame, n: int = 200, seed: int = 0, x: str = "flops",
              y: str = "eval_loss") -> list[PowerLaw]:
  """Refits on ``n`` resamples of the family's runs (whole runs, not points)."""
  rng = np.random.default_rng(seed)
  full = fit_frontier(df, x, y)
  runs = df["run"].unique()
  groups = {run: g for run, g in df.groupby("run")}
  fits = []
  for _ in range(n):
    sample = pd.concat([groups[r] for r in rng.choice(runs, len(runs))])
    try:
      fits.append(fit_frontier(sample, x, y, n_starts=2, warm=full))
    except AnalysisError:
      continue
  return fits


def interval(values, level: float = 0.95) -> tuple[float, float]:
  values = np.asarray(values, float)
  values = values[np.isfinite(values)]
  if not len(values):
    return (np.nan, np.nan)
  lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
  return float(lo), float(hi)


def multiplier(dense: PowerLaw, family: PowerLaw, loss) -> np.ndarray:
  """k(L) = C_dense(L) / C_family(L): how many times less compute the family needs."""
  return dense.compute_to_reach(loss) / family.compute_to_reach(loss)
