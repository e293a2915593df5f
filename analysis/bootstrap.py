"""Per-family frontier laws L(C) = E + A C^-alpha with bootstrap percentile CIs, compute
multipliers and exponent differences.

``METHODS`` name how the law is fitted (to the lower envelope, or derived from a joint
L(N, D) fit of all evaluations) and how it is resampled (whole runs, evaluations within runs,
or the fit's residuals). Resamples become per-point weights or resampled losses, so all B refits
of a family run in one batched call (``analysis.fits``). The default, ``joint-residual``, is the
one whose 95% intervals cover the truth at their nominal rate on synthetic sweeps
(``analysis.calibration``, benchmarks/results/ci_calibration.md).
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


METHODS = {
    "joint-residual": "all of a family's evaluations fitted jointly as L(N, D) = E + A N^-a + B D^-b "
                      "(N = training FLOPs per token / 6, so C = 6 N D exactly), the frontier "
                      "L(C) = E + G C^-alpha derived from it in closed form; parametric bootstrap "
                      "of the log-loss residuals",
    "joint-runs": "the joint L(N, D) fit; bootstrap resampling whole runs",
    "joint-points": "the joint L(N, D) fit; bootstrap resampling evaluations within each run",
    "envelope-residual": "L(C) fitted to the lower envelope of the evaluations; parametric "
                         "bootstrap of the envelope's log-loss residuals",
    "envelope-runs": "L(C) fitted to the lower envelope; bootstrap resampling whole runs "
                     "(each resample's own envelope)",
}
DEFAULT_METHOD = "joint-residual"
# What a joint method falls back to when the L(N, D) fit has no frontier (an exponent <= 0).
ENVELOPE_FALLBACK = {"joint-residual": "envelope-residual", "joint-runs": "envelope-runs",
                     "joint-points": "envelope-runs"}


@dataclasses.dataclass(frozen=True)
class FamilyFit:
  """One family's frontier, its L(C) fit and the fits of ``n`` bootstrap resamples (``joint``:
  the L(N, D) fit the frontier law comes from, for the joint methods)."""

  family: str
  n_runs: int
  front: pd.DataFrame
  fit: fits.PowerLaw
  draws: fits.PowerLaw   # fields are [n] arrays
  method: str = DEFAULT_METHOD
  joint: fits.Chinchilla | None = None
  note: str = ""   # why ``method`` is not the one asked for

  def ci(self, name: str, level: float = 0.95) -> tuple[float, float]:
    return interval(getattr(self.draws, name), level)

  def warnings(self, y: str = "eval_loss") -> list[str]:
    """Why this family's intervals would mislead (empty: they can be printed)."""
    out = []
    if self.n_runs < 3:
      out.append(f"{self.n_runs} runs: too few sizes for an interval to mean anything")
    for name in ("alpha", "E"):
      lo, hi = self.ci(name)
      value = float(getattr(self.fit, name))
      slack = 1e-6 * abs(value)
      if not lo - slack <= value <= hi + slack:
        out.append(f"the {name} estimate {value:.4g} lies outside its interval [{lo:.4g}, {hi:.4g}]")
    best = float(self.front[y].min())
    if self.ci("E")[1] >= best:
      out.append(f"E's interval reaches above the best observed loss {best:.4g}")
    return out


def data_column(df: pd.DataFrame) -> str:
  """Training data seen per evaluation: tokens where the runs log them, else examples."""
  return "tokens" if "tokens" in df and df["tokens"].notna().all() else "examples"


def _residual_draws(predicted_N, observed_N, n: int, seed: int) -> np.ndarray:
  """[n, N] losses: the fit's prediction times resampled multiplicative residuals."""
  residual = np.log(observed_N) - np.log(predicted_N)
  rng = np.random.default_rng(seed)
  return np.asarray(predicted_N) * np.exp(rng.choice(residual, (n, len(residual))))


def fit_family(df: pd.DataFrame, n: int = 200, seed: int = 0, x: str = "flops",
               y: str = "eval_loss", final_only: bool = False,
               method: str = DEFAULT_METHOD) -> FamilyFit:
  """Fits one family's frontier law L(C) and ``n`` bootstrap refits by ``method`` (METHODS)."""
  if method not in METHODS:
    raise AnalysisError(f"method '{method}' is unknown; valid: {sorted(METHODS)}")
  family = str(df["family"].iloc[0])
  if final_only and "final" in df:
    df = df[df["final"].fillna(False).astype(bool)]
  if df["run"].nunique() < 2:
    raise AnalysisError(f"family '{family}' has {df['run'].nunique()} run(s); a scaling fit needs "
                        "runs at >= 2 sizes")
  front = frontier.envelope(df, x, y)
  note, joint = "", None
  try:
    if method.startswith("joint"):
      joint = _joint_fit(df, x, y)
      if not (joint.alpha > 0 and joint.beta > 0):
        note = (f"the joint L(N, D) fit has exponents a = {float(joint.alpha):.3g}, b = "
                f"{float(joint.beta):.3g}: with {df['run'].nunique()} sizes it does not pin a "
                f"falling N term, so it has no frontier; fitted by {ENVELOPE_FALLBACK[method]}")
        method, joint = ENVELOPE_FALLBACK[method], None
    if joint is not None:
      fit, draws = _joint_draws(df, joint, n, seed, x, y, method)
    else:
      fit, draws = _envelope(df, front, n, seed, x, y, method)
  except AnalysisError as e:
    raise AnalysisError(f"family '{family}': {e} (its frontier has {len(front)} points)") from e
  return FamilyFit(family, df["run"].nunique(), front, fit, draws, method, joint, note)


def _envelope(df, front, n, seed, x, y, method):
  fit = fits.fit_power_law(front[x], front[y])
  if method == "envelope-residual":
    resampled = _residual_draws(fit.loss(front[x]), front[y].to_numpy(), n, seed)
    return fit, fits.fit_power_law(front[x], front[y], warm=fit, resampled_BxN=resampled)
  include_BxN = run_counts(df["run"], n, seed) > 0
  weights_BxN = frontier.envelope_mask(df[x], df[y], include_BxN).astype(float)
  return fit, fits.fit_power_law(df[x], df[y], weights_BxN=weights_BxN, warm=fit)


def _joint_data(df, x, y):
  """(N, D, loss) per evaluation: C = 6 N D with N = FLOPs per datum / 6."""
  data = df[data_column(df)].to_numpy(float)
  return df[x].to_numpy(float) / (6 * data), data, df[y].to_numpy(float)


def _joint_fit(df, x, y) -> fits.Chinchilla:
  per_token, data, loss = _joint_data(df, x, y)
  grid = fits.chinchilla_grid(np.log(per_token), np.log(data), np.log(loss))
  return fits.fit_chinchilla(per_token, data, loss, grid_SxP=grid)


def _joint_draws(df, joint, n, seed, x, y, method):
  per_token, data, loss = _joint_data(df, x, y)
  if method == "joint-residual":
    resampled = _residual_draws(joint.loss(per_token, data), loss, n, seed)
    draws = fits.fit_chinchilla(per_token, data, loss, warm=joint, resampled_BxN=resampled)
  else:
    groups = df["run"] if method == "joint-runs" else None
    weights = run_counts(groups, n, seed) if groups is not None else point_counts(df["run"], n, seed)
    draws = fits.fit_chinchilla(per_token, data, loss, weights_BxN=weights, warm=joint)
  with np.errstate(all="ignore"):   # a draw with a degenerate term gives a nan frontier
    return joint.frontier(), draws.frontier()


def point_counts(runs_N, n: int, seed: int = 0) -> np.ndarray:
  """[n, N]: each run's evaluations resampled with replacement within the run."""
  runs_N = np.asarray(runs_N)
  rng = np.random.default_rng(seed)
  counts = np.zeros((n, len(runs_N)))
  for run in np.unique(runs_N):
    idx = np.nonzero(runs_N == run)[0]
    draws = rng.integers(0, len(idx), (n, len(idx)))
    np.add.at(counts, (np.arange(n)[:, None], idx[draws]), 1)
  return counts


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
  Returns k and its CI per loss (``at_best`` = the best loss both reach), k measured on the two
  frontiers at the same losses (log-log interpolation: the data's answer beside the fit's), and
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
  def measured(loss):
    return (frontier.compute_to_reach(reference.front, loss) /
            frontier.compute_to_reach(family.front, loss))
  table = pd.DataFrame({"loss": losses, "k": multiplier(reference.fit, family.fit, losses),
                        "k_lo": [c[0] for c in cis], "k_hi": [c[1] for c in cis],
                        "k_measured": [measured(loss) for loss in losses]})
  k_best = multiplier(reference.fit, family.fit, lo)
  k_best_ci = interval(multiplier(reference.draws, family.draws, lo), level)
  d_alpha = family.draws.alpha - reference.draws.alpha
  return {"table": table, "best_loss": lo, "k_at_best": float(k_best), "k_measured": measured(lo),
          "k_at_best_ci": k_best_ci, "headline": headline(reference, family, table, lo, k_best_ci),
          "delta_alpha": float(family.fit.alpha - reference.fit.alpha),
          "delta_alpha_ci": interval(d_alpha, level)}


def headline(reference: FamilyFit, family: FamilyFit, table: pd.DataFrame, best: float,
             best_ci: tuple[float, float]) -> dict:
  """The multiplier to quote: at the best loss both frontiers reach (L*) where both fits reach
  it; otherwise at the lowest loss of the observed overlap where they do, saying why the
  fitted value at L* is unbounded. Notes also say when an interval end is unbounded."""
  above = [f"'{r.family}' fit's E = {float(r.fit.E):.4g}" for r in (reference, family)
           if float(r.fit.E) >= best]
  finite = table[np.isfinite(table["k"]) & (table["k"] > 0)]
  note, row = "", {"loss": best, "k": float(multiplier(reference.fit, family.fit, best)),
                   "k_lo": best_ci[0], "k_hi": best_ci[1]}
  if above:
    note = (f"the fitted k at L* = {best:.4g} is unbounded: the {' and '.join(above)} lies above "
            "L*, so that fit never reaches the loss its frontier did")
    if not len(finite):
      return {"loss": np.nan, "k": np.nan, "ci": (np.nan, np.nan), "note": note + "; no loss in "
              "the observed overlap is reached by both fits"}
    row = finite.iloc[0].to_dict()
    note += f"; quoted at L = {row['loss']:.4g}, the lowest observed loss both fits reach"
  if not np.isfinite(row["k_hi"]) or row["k_lo"] <= 0:
    note += ("; " if note else "") + ("an interval end is unbounded: in over 2.5% of resamples "
                                      "one family's fit never reaches this loss")
  return {"loss": float(row["loss"]), "k": float(row["k"]), "ci": (row["k_lo"], row["k_hi"]),
          "note": note}
