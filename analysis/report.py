"""Markdown reports: ``summary.md`` (one table of fits and multipliers) and ``fit_report.md``
(convergence, multiplier vs loss, exponent differences, hold-out extrapolation)."""

from __future__ import annotations

import numpy as np

from analysis import bootstrap


def _ci(value: float, ci: tuple[float, float], fmt: str = ".3g") -> str:
  return f"{value:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def summary(results: dict[str, bootstrap.FamilyFit], comparisons: dict[str, dict],
            reference: str, n_boot: int, left_out: dict[str, str],
            skipped: dict[str, str] | None = None, partial: dict[str, str] | None = None,
            unfitted: dict[str, str] | None = None) -> str:
  """Per family: runs, alpha and E with 95% CIs, best loss, multiplier vs ``reference``
  (``skipped``: family -> why no multiplier could be measured); then every run left out or
  used in part, and every interval withheld, with the reason."""
  methods = [r.method for r in results.values() if not r.note] or [r.method for r in results.values()]
  method = methods[0] if methods else bootstrap.DEFAULT_METHOD
  lines = ["# Scaling-law summary", "",
           f"Per family, the compute frontier L(C) = E + A C^-alpha: {bootstrap.METHODS[method]} "
           f"(method `{method}`, {n_boot} resamples, 95% percentile CIs). Fits minimise the summed "
           "Huber loss on log-loss.", "",
           f"| family | runs | alpha [95% CI] | E [95% CI] | best loss | k vs {reference} measured "
           f"at L* | k vs {reference} fitted [95% CI] | at loss |", "|---|---|---|---|---|---|---|---|"]
  warnings = {family: r.warnings() for family, r in results.items()}
  notes = []
  for family, r in sorted(results.items()):
    k, measured, at = "—", "—", "—"
    if family in comparisons:
      c, h = comparisons[family], comparisons[family]["headline"]
      k, at, measured = _ci(h["k"], h["ci"]), f"{h['loss']:.4g}", f"{c['k_measured']:.3g}"
      if warnings[family] or warnings.get(reference):
        k = f"{h['k']:.3g} (interval withheld)"
      if not np.isfinite(h["k"]):
        k = "n/a: the fitted laws give no finite multiplier"
      if h["note"]:
        notes.append(f"- {family}: {h['note']}.")
    elif skipped and family in skipped:
      k = f"n/a: {skipped[family]}"
    shown = (lambda v, name, fmt=".3g": f"{float(v):{fmt}} (interval withheld)" if warnings[family]
             else _ci(float(v), r.ci(name), fmt))
    lines.append(f"| {family} | {r.front['run'].nunique()} of {r.n_runs} on frontier | "
                 f"{shown(r.fit.alpha, 'alpha')} | {shown(r.fit.E, 'E', '.4g')} | "
                 f"{r.front['eval_loss'].min():.4g} | {measured} | {k} | {at} |")
  lines += ["", f"k = C_{reference}(L) / C_family(L) (k > 1: the family needs k times less compute "
            f"than {reference}), at L* = the best loss both families' frontiers reach: measured on the "
            "two frontiers (log-log interpolation), and from the fitted laws with its interval."]
  if notes:
    lines += ["", "Multiplier notes:", ""] + notes
  fallbacks = [f"- {family}: {r.note}." for family, r in sorted(results.items()) if r.note]
  if fallbacks:
    lines += ["", "Fitted another way:", ""] + fallbacks
  withheld = [f"- {family}: {'; '.join(w)}." for family, w in sorted(warnings.items()) if w]
  if withheld:
    lines += ["", "Intervals withheld (they would mislead):", ""] + withheld
  if unfitted:
    lines += ["", "Families not fitted:", ""] + [f"- {f}: {why}" for f, why in sorted(unfitted.items())]
  if left_out:
    lines += ["", "Runs left out:", ""] + [f"- `{run}`: {why}" for run, why in sorted(left_out.items())]
  if partial:
    lines += ["", "Runs used in part:", ""] + [f"- `{run}`: {why}" for run, why in sorted(partial.items())]
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
              "", "Compute multiplier inside the loss range both frontiers observed (k fitted, its "
              "95% interval, and k measured on the two frontiers):", "",
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
