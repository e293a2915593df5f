"""python -m analysis SWEEP_DIR [SWEEP_DIR ...] --out DIR

Loads every run under the given directories, takes each family's compute frontier, fits
L(C) = E + A C^-alpha per family with bootstrap CIs (resampling runs), and writes
DIR/scaling.png and DIR/summary.md (per family: alpha and E with 95% CIs, and the compute
multiplier vs dense at the best loss both reach).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from analysis import fits, frontier, plots, runs


def multipliers(df, reference: str, family: str, n: int, seed: int = 0):
  """Measured k = C_ref(L*) / C_family(L*) on the frontiers at L* = the best loss both reach,
  and its bootstrap CI (runs of both families resampled jointly)."""
  ref, fam = df[df["family"] == reference], df[df["family"] == family]
  target = max(ref["eval_loss"].min(), fam["eval_loss"].min())

  def k(a, b):   # nan where a resample's frontier never reaches L*
    c_a, c_b = (frontier.compute_to_reach(frontier.envelope(g), target) for g in (a, b))
    return c_a / c_b if np.isfinite(c_a) and np.isfinite(c_b) else np.nan

  rng = np.random.default_rng(seed)
  by_run = {name: g for name, g in df.groupby("run")}
  draws = [k(*(pd.concat([by_run[r] for r in rng.choice(g["run"].unique(), g["run"].nunique())])
               for g in (ref, fam))) for _ in range(n)]
  return target, k(ref, fam), fits.interval(draws)


def report(df, fit_by_family, boots, reference: str, n: int) -> str:
  lines = ["# Scaling-law summary", "",
           "Fit per family on its compute frontier: L(C) = E + A C^-alpha (summed Huber on "
           "log-loss); 95% percentile CIs from bootstrapping runs.", "",
           "| family | runs | alpha [95% CI] | E [95% CI] | best loss | compute multiplier vs "
           f"{reference} [95% CI] |", "|---|---|---|---|---|---|"]
  for family, fit in sorted(fit_by_family.items()):
    group = df[df["family"] == family]
    best = float(group["eval_loss"].min())
    alpha_ci = fits.interval([b.alpha for b in boots[family]])
    e_ci = fits.interval([b.E for b in boots[family]])
    mult = "—"
    if reference in set(df["family"]) and family != reference:
      target, k, k_ci = multipliers(df, reference, family, n)
      mult = f"{k:.3g} [{k_ci[0]:.3g}, {k_ci[1]:.3g}] at L*={target:.4g}"
    lines.append(f"| {family} | {group['run'].nunique()} | {fit.alpha:.3g} [{alpha_ci[0]:.3g}, "
                 f"{alpha_ci[1]:.3g}] | {fit.E:.4g} [{e_ci[0]:.4g}, {e_ci[1]:.4g}] | {best:.4g} | "
                 f"{mult} |")
  lines += ["", f"Compute multiplier k = C_{reference}(L*) / C_family(L*), measured on the "
            "frontiers at L* = the best loss both families reach (k > 1: the family needs k times "
            f"less compute than {reference})."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dirs", nargs="+", help="sweep directories (or single run directories)")
  parser.add_argument("--out", required=True, help="output directory for plots and report")
  parser.add_argument("--family", default="model.kind", help="config column that names the family")
  parser.add_argument("--reference", default="dense", help="family the multipliers compare against")
  parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of runs")
  args = parser.parse_args(argv)
  try:
    df = runs.load(args.dirs, family=args.family)
    bad = sorted(df[df["diverged"]]["run"].unique())
    if bad:
      print(f"excluding {len(bad)} diverged run(s) (non-finite loss): {bad}", file=sys.stderr)
    df = df[~df["diverged"]]
    fronts = frontier.per_family(df)
    fit_by_family, boots = {}, {}
    for family, group in df.groupby("family"):
      if group["run"].nunique() < 2:
        print(f"skipping family '{family}': a fit needs runs at >= 2 sizes, it has 1", file=sys.stderr)
        continue
      fit_by_family[family] = fits.fit_frontier(group)
      boots[family] = fits.bootstrap(group, n=args.bootstrap)
    if not fit_by_family:
      raise runs.AnalysisError("no family has runs at >= 2 sizes; nothing to fit")
  except runs.AnalysisError as e:
    sys.exit(f"error: {e}")
  os.makedirs(args.out, exist_ok=True)
  plots.frontiers(df, fronts, fit_by_family, boots, path=os.path.join(args.out, "scaling.png"))
  text = report(df, fit_by_family, boots, args.reference, args.bootstrap)
  with open(os.path.join(args.out, "summary.md"), "w") as f:
    f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
