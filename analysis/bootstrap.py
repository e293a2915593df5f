"""Bootstrap over runs: per-family frontier fits with percentile CIs, compute multipliers and
exponent differences.

A resample draws a family's runs with replacement (whole runs, not points: checkpoints of
one run are not independent). It becomes per-point weights, so all B refits of a family run
in one batched call (``analysis.fits``). For frontier fits the weights are the resample's own
envelope, so a run drawn twice counts once, as it would on a plot.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from analysis import fits, frontier
from analysis.runs import AnalysisError


def run_counts(runs_N, n: int, seed: int = 0) -> np.ndarray:
  """[n, N]: how often each point's run is drawn in each of ``n`` resamples of the runs."""
  names, run_idx = np.unique(np.asarray(runs_N), return_inverse=True)
  rng = np.random.default_rng(seed)
  counts_BxR = np.stack([np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
                         for _ in range(n)]) if n else np.zeros((0, len(names)), int)
  return counts_BxR[:, run_idx]


def interval(values, level: float = 0.95) -> tuple[float, float]:
  """Percentile interval of the non-NaN values (nan, nan if none). Infinite draws count: a
  multiplier is inf where a resample's fit never reaches the loss, and an end that falls
  among them is inf, not the largest finite draw."""
  values = np.asarray(values, float)
  values = values[~np.isnan(values)]
  if not len(values):
    return (np.nan, np.nan)
  big = np.finfo(float).max / 4   # stands in for inf so that percentiles can interpolate
  ends = np.percentile(np.clip(values, -big, big), [50 * (1 - level), 50 * (1 + level)])
  finite = values[np.isfinite(values)]
  low, high = (finite.min(), finite.max()) if len(finite) else (big, -big)
  return tuple(float(np.inf if e > high else -np.inf if e < low else e) for e in ends)


@dataclasses.dataclass(frozen=True)
class FamilyFit:
  """One family's frontier, its L(C) fit and the fits of ``n`` bootstrap resamples."""

  family: str
  n_runs: int
  front: pd.DataFrame
  fit: fits.PowerLaw
  draws: fits.PowerLaw   # fields are [n] arrays

  def ci(self, name: str, level: float = 0.95) -> tuple[float, float]:
    return interval(getattr(self.draws, name), level)


def fit_family(df: pd.DataFrame, n: int = 200, seed: int = 0, x: str = "flops",
               y: str = "eval_loss", final_only: bool = False) -> FamilyFit:
  """Fits L(C) on one family's frontier and on ``n`` resamples of its runs."""
  family = str(df["family"].iloc[0])
  if final_only and "final" in df:
    df = df[df["final"].fillna(False).astype(bool)]
  if df["run"].nunique() < 2:
    raise AnalysisError(f"family '{family}' has {df['run'].nunique()} run(s); a scaling fit needs "
                        "runs at >= 2 sizes")
  front = frontier.envelope(df, x, y)
  try:
    fit = fits.fit_power_law(front[x], front[y])
  except AnalysisError as e:
    raise AnalysisError(f"family '{family}': {e} (its frontier has {len(front)} points)") from e
  include_BxN = run_counts(df["run"], n, seed) > 0
  weights_BxN = frontier.envelope_mask(df[x], df[y], include_BxN).astype(float)
  draws = fits.fit_power_law(df[x], df[y], weights_BxN=weights_BxN, warm=fit)
  return FamilyFit(family, df["run"].nunique(), front, fit, draws)


def overlap(a: FamilyFit, b: FamilyFit, y: str = "eval_loss") -> tuple[float, float]:
  """Loss range both frontiers observed: multipliers are only reported inside it."""
  return (max(a.front[y].min(), b.front[y].min()), min(a.front[y].max(), b.front[y].max()))


def multiplier(reference: fits.PowerLaw, family: fits.PowerLaw, loss):
  """k(L) = C_ref(L) / C_family(L): how many times less compute the family needs for loss L."""
  with np.errstate(invalid="ignore"):
    return reference.compute_to_reach(loss) / family.compute_to_reach(loss)


def compare(reference: FamilyFit, family: FamilyFit, losses=None, level: float = 0.95) -> dict:
  """Compute multiplier vs ``reference`` and the exponent difference, with bootstrap CIs.

  ``losses`` default: 9 values log-spaced over the observed overlap; each must lie in it.
  Returns k and its CI per loss (``at_best`` = the best loss both reach), and
  delta_alpha = alpha_family - alpha_reference with its CI.
  """
  lo, hi = overlap(reference, family)
  if not lo <= hi:
    raise AnalysisError(f"'{family.family}' and '{reference.family}' frontiers share no loss "
                        f"range (the best loss both reach, {lo:.4g}, is above {hi:.4g}, the "
                        "highest loss on one of them)")
  losses = np.geomspace(lo, hi, 9) if losses is None else np.asarray(losses, float)
  if np.any((losses < lo * (1 - 1e-9)) | (losses > hi * (1 + 1e-9))):
    raise AnalysisError(f"multiplier asked outside the shared loss range [{lo:.4g}, {hi:.4g}]")
  k_draws_BxL = multiplier(reference.draws, family.draws, losses)
  cis = [interval(k, level) for k in k_draws_BxL.T]
  table = pd.DataFrame({"loss": losses, "k": multiplier(reference.fit, family.fit, losses),
                        "k_lo": [c[0] for c in cis], "k_hi": [c[1] for c in cis]})
  k_best = multiplier(reference.fit, family.fit, lo)
  d_alpha = family.draws.alpha - reference.draws.alpha
  measured = (frontier.compute_to_reach(reference.front, lo) /
              frontier.compute_to_reach(family.front, lo))
  return {"table": table, "best_loss": lo, "k_at_best": float(k_best), "k_measured": float(measured),
          "k_at_best_ci": interval(multiplier(reference.draws, family.draws, lo), level),
          "delta_alpha": float(family.fit.alpha - reference.fit.alpha),
          "delta_alpha_ci": interval(d_alpha, level)}
