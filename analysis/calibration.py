"""python -m analysis.calibration [--seeds 20] [--bootstrap 100] [--out benchmarks/results/ci_calibration.md]

Do the 95% intervals mean what they say? Synthetic sweeps with a known truth: families whose
evaluations follow L(N, D) = E + a (m_f N)^-p + b D^-q with C = 6 N D (m_f: the family's
compute efficiency, so its true multiplier vs dense is k = m_f at every loss, and every
family's frontier is E + G C^-alpha with alpha = pq / (p + q)), 6 widths, 12 evaluations per
run, independent multiplicative noise of 0.5% and 2%. For each bootstrap method
(``bootstrap.METHODS``), over noise seeds: how often the 95% intervals of alpha, E and k cover
the truth, and how wide they are relative to the seeds' spread (the width of the central 95%
of the estimates across seeds, taken as 3.92 x their standard deviation).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analysis import bootstrap

TRUTH = {"E": 1.5, "a": 60.0, "p": 0.35, "b": 100.0, "q": 0.3}
FAMILIES = {"dense": 1.0, "btt": 3.0, "low_rank": 0.5}   # family -> true k vs dense
NOISES = (0.005, 0.02)


def true_alpha(truth: dict = TRUTH) -> float:
  return truth["p"] * truth["q"] / (truth["p"] + truth["q"])


def sweep(seed: int, noise: float, widths: int = 6, evals: int = 12, families: dict = FAMILIES,
          truth: dict = TRUTH) -> pd.DataFrame:
  """One synthetic sweep as ``runs.load`` returns it (columns run, family, tokens, flops,
  eval_loss): N = 1e5 x 4^i, each run evaluated at 12 log-spaced D up to 50 N."""
  rng = np.random.default_rng(seed)
  frames = []
  for family, m in families.items():
    for i in range(widths):
      n = 1e5 * 4.0**i
      d = np.geomspace(50 * n / 300, 50 * n, evals)
      loss = truth["E"] + truth["a"] * (m * n) ** -truth["p"] + truth["b"] * d ** -truth["q"]
      frames.append(pd.DataFrame({
          "run": f"{family}{i}", "family": family, "step": np.arange(1, evals + 1), "tokens": d,
          "flops": 6 * n * d, "eval_loss": loss * np.exp(noise * rng.standard_normal(evals))}))
  return pd.concat(frames, ignore_index=True)


def estimates(df: pd.DataFrame, method: str, n_boot: int, seed: int,
              reference: str = "dense") -> list[dict]:
  """(family, quantity, estimate, lo, hi) rows: alpha and E per family, k vs ``reference``."""
  fitted = {f: bootstrap.fit_family(g, n=n_boot, seed=seed, method=method)
            for f, g in df.groupby("family")}
  rows = []
  for family, r in fitted.items():
    for name in ("alpha", "E"):
      rows.append({"family": family, "quantity": name, "estimate": float(getattr(r.fit, name)),
                   **dict(zip(("lo", "hi"), r.ci(name)))})
    if family != reference:
      c = bootstrap.compare(fitted[reference], r)
      rows.append({"family": family, "quantity": "k", "estimate": c["k_at_best"],
                   **dict(zip(("lo", "hi"), c["k_at_best_ci"]))})
  return rows


def calibrate(methods, noises=NOISES, seeds: int = 20, n_boot: int = 100) -> pd.DataFrame:
  """Coverage and width ratio per method, noise and quantity (families pooled)."""
  truths = {"alpha": true_alpha(), "E": TRUTH["E"]}
  rows = []
  for method in methods:
    for noise in noises:
      t0 = time.perf_counter()
      est = pd.DataFrame([{**row, "seed": s} for s in range(seeds)
                          for row in estimates(sweep(s, noise), method, n_boot, seed=s)])
      seconds = time.perf_counter() - t0
      est["truth"] = [FAMILIES[f] if q == "k" else truths[q] for f, q in zip(est.family, est.quantity)]
      est["covered"] = (est.lo <= est.truth) & (est.truth <= est.hi)
      est["width"] = est.hi - est.lo
      for quantity, g in est.groupby("quantity", sort=False):
        spread = g.groupby("family")["estimate"].std() * 3.92
        ratio = (g.groupby("family")["width"].median() / spread).median()
        rows.append({"method": method, "noise": noise, "quantity": quantity,
                     "coverage": g.covered.mean(), "width / seed spread": ratio,
                     "bias": (g.estimate - g.truth).mean(), "seeds": seeds,
                     "seconds per sweep": seconds / seeds})
  return pd.DataFrame(rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, default=20)
  parser.add_argument("--bootstrap", type=int, default=100)
  parser.add_argument("--methods", default=",".join(bootstrap.METHODS))
  parser.add_argument("--out", default=None, help="markdown file for the table")
  args = parser.parse_args(argv)
  tables = []
  for method in args.methods.split(","):   # one method at a time, written as it finishes
    tables.append(calibrate([method], seeds=args.seeds, n_boot=args.bootstrap))
    text = pd.concat(tables).to_markdown(index=False, floatfmt=".3g")
    if args.out:
      with open(args.out, "w") as f:
        f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
