"""Markdown reports: ``summary.md`` (one table of fits and multipliers) and ``fit_report.md``
(convergence, multiplier vs loss, exponent differences, hold-out extrapolation)."""

from __future__ import annotations

import numpy as np

from analysis import bootstrap


def _ci(value: float, ci: tuple[float, float], fmt: str = ".3g") -> str:
  return f"{value:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def summary(results: dict[str, bootstrap.FamilyFit], comparisons: dict[str, dict],
            reference: str, n_boot: int, excluded: dict[str, str],
            skipped: dict[str, str] | None = None) -> str:
  """Per family: runs, alpha and E with 95% CIs, best loss, multiplier vs ``reference``
  (``skipped``: family -> why no multiplier could be measured)."""
  lines = ["# Scaling-law summary", "",
           "Per family, L(C) = E + A C^-alpha fitted to its compute frontier (lower envelope of "
           "eval loss vs cumulative training FLOPs; summed Huber on log-loss, multi-start L-BFGS). "
           f"95% percentile CIs from {n_boot} bootstrap resamples of runs.", "",
           f"| family | runs | alpha [95% CI] | E [95% CI] | best loss | k vs {reference} measured "
           f"at L* | k vs {reference} fitted at L* [95% CI] | L* |", "|---|---|---|---|---|---|---|---|"]
  for family, r in sorted(results.items()):
    k, measured, at = "—", "—", "—"
    if family in comparisons:
      c = comparisons[family]
      k, at = _ci(c["k_at_best"], c["k_at_best_ci"]), f"{c['best_loss']:.4g}"
      measured = f"{c['k_measured']:.3g}"
    elif skipped and family in skipped:
      k = f"n/a: {skipped[family]}"
    lines.append(f"| {family} | {r.front['run'].nunique()} of {r.n_runs} on frontier | "
                 f"{_ci(r.fit.alpha, r.ci('alpha'))} | {_ci(r.fit.E, r.ci('E'), '.4g')} | "
                 f"{r.front['eval_loss'].min():.4g} | {measured} | {k} | {at} |")
  lines += ["", f"k = C_{reference}(L*) / C_family(L*) at L* = the best loss both families reach "
            f"(k > 1: the family needs k times less compute than {reference}): measured on the two "
            "frontiers (log-log interpolation), and from the fitted curves (inf or 0 where a fit's "
            "E lies above L*, i.e. the fit says that family never reaches it)."]
  if excluded:
    lines += ["", "Excluded runs:", ""] + [f"- `{run}`: {why}" for run, why in sorted(excluded.items())]
  return "\n".join(lines) + "\n"


def fit_report(results: dict[str, bootstrap.FamilyFit], comparisons: dict[str, dict],
               holdouts: dict[str, dict], reference: str) -> str:
  lines = ["# Fit report", "", "## Fits", "",
           "| family | frontier points | E | A | alpha | summed Huber | converged | "
           "bootstrap fits converged |", "|---|---|---|---|---|---|---|---|"]
  for family, r in sorted(results.items()):
    lines.append(f"| {family} | {len(r.front)} | {r.fit.E:.5g} | {r.fit.A:.5g} | "
                 f"{r.fit.alpha:.5g} | {r.fit.objective:.4g} | {bool(r.fit.converged)} | "
                 f"{np.mean(r.draws.converged):.0%} |")
  for family, c in sorted(comparisons.items()):
    lines += ["", f"## {family} vs {reference}", "",
              f"alpha_{family} - alpha_{reference} = {_ci(c['delta_alpha'], c['delta_alpha_ci'])}",
              "", "Compute multiplier inside the loss range both frontiers observed:", "",
              c["table"].to_markdown(index=False, floatfmt=".4g")]
  lines += ["", "## Hold-out extrapolation", "",
            "Fit on frontier points up to the largest run's predecessor's compute, scored on the "
            "frontier points above it (RMSLE: root-mean-square log error).", "",
            "| family | cut (FLOPs) | held-out points | RMSLE | max abs log error |",
            "|---|---|---|---|---|"]
  for family, h in sorted(holdouts.items()):
    if "error" in h:
      lines.append(f"| {family} | — | — | {h['error']} | — |")
    else:
      lines.append(f"| {family} | {h['cut']:.3g} | {len(h['log_error'])} | {h['rmsle']:.3g} | "
                   f"{np.max(np.abs(h['log_error'])):.3g} |")
  return "\n".join(lines) + "\n"
