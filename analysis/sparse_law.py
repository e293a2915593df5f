"""python -m analysis.sparse_law RUN_DIR [RUN_DIR ...] --out DIR

One scaling law for dense and sparse runs ("The Journey Matters", Jin et al. ICLR 2025): fits
the Chinchilla form L(N̄, D) = E + A / N̄^alpha + B / D^beta on every eval point of every run,
with N̄ the time-averaged live parameter count up to that point (``avg_live_params``, logged by
experiments/sparsity; dense runs: ``params``) and D the training examples seen. Then asks
whether the runs of every method fall on that one curve: the mean log-residual per method
(sparsity.method; dense runs are 'dense') with a 95% bootstrap interval over its runs. A
method lies off the shared curve when its whole interval is beyond ±TOLERANCE (1% of the
loss, about seed-to-seed noise: with few runs an interval can exclude 0 by a hair). The same fit on the final live
count N instead of N̄ is reported beside it (the paper's claim is that N̄ fits better).

Writes DIR/sparse_law.md and DIR/sparse_law.png.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from analysis import bootstrap, fits, runs
from analysis.runs import AnalysisError

# Starts (log A, log B, log E, alpha, beta): Hoffmann's grid at half its resolution (a few
# hundred runs' worth of points need no more; the full grid costs minutes on a loaded CPU).
TOLERANCE = 0.01
GRID = fits.HOFFMANN_GRID[np.all(fits.HOFFMANN_GRID[:, [0, 1]] % 10 == 0, axis=1)
                          & np.all(fits.HOFFMANN_GRID[:, [3, 4]] % 1 == 0, axis=1)]


def load(dirs: list[str]) -> pd.DataFrame:
  """Eval points with columns method, n_avg (N̄), n_final (live N), examples, eval_loss, run."""
  df, _ = runs.exclude_diverged(runs.load(dirs, family="model.kind"))
  method = df["sparsity.method"] if "sparsity.method" in df else pd.Series("none", df.index)
  df["method"] = method.fillna("none").replace("none", "dense")
  live = df["live_params"] if "live_params" in df else pd.Series(np.nan, df.index)
  avg = df["avg_live_params"] if "avg_live_params" in df else pd.Series(np.nan, df.index)
  df["n_final"] = live.fillna(df["params"])
  df["n_avg"] = avg.fillna(df["params"])
  return df


def residuals(law: fits.Chinchilla, df: pd.DataFrame, n: str) -> np.ndarray:
  """log L - log L̂ of every point."""
  return np.log(df["eval_loss"].to_numpy()) - np.log(law.loss(df[n], df["examples"]))


def by_method(df: pd.DataFrame, resid_N: np.ndarray, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
  """Per method: runs, points, mean log-residual and its 95% interval (runs resampled)."""
  rows = []
  df = df.assign(resid=resid_N)
  for i, (method, group) in enumerate(sorted(df.groupby("method"))):
    per_run = group.groupby("run")["resid"].mean().to_numpy()
    draws = np.random.default_rng(seed + i).choice(per_run, (n_boot, len(per_run))).mean(axis=1)
    low, high = bootstrap.interval(draws)
    rows.append(dict(method=method, runs=len(per_run), points=len(group),
                     mean_resid=float(group["resid"].mean()), low=low, high=high,
                     on_curve=bool(low <= TOLERANCE and high >= -TOLERANCE)))
  return pd.DataFrame(rows)


def fit(df: pd.DataFrame, n: str = "n_avg") -> tuple[fits.Chinchilla, pd.DataFrame]:
  """The shared law on parameter column ``n`` and the per-method residual table."""
  if df[n].nunique() < 2 or df["examples"].nunique() < 2:
    raise AnalysisError(f"the law needs runs that differ in {n} and in examples (eval_every "
                        f"below steps); got {df[n].nunique()} and {df['examples'].nunique()} values")
  law = fits.fit_chinchilla(df[n], df["examples"], df["eval_loss"], grid_SxP=GRID)
  return law, by_method(df, residuals(law, df, n))


def report(df: pd.DataFrame) -> tuple[str, fits.Chinchilla]:
  """The markdown report of both fits, and the law on N̄."""
  lines = ["# One law for dense and sparse runs", "",
           f"{df['run'].nunique()} runs, {len(df)} eval points. L(N, D) = E + A/N^alpha + B/D^beta; "
           "residual = log L - log L-hat, mean per method with a 95% bootstrap interval over runs; "
           f"on the curve unless the interval lies beyond ±{TOLERANCE}.", ""]
  laws = {}
  for n, name in (("n_avg", "N̄ (time-averaged live parameters)"), ("n_final", "N (final live parameters)")):
    law, table = fit(df, n)
    laws[n] = law
    rms = float(np.sqrt(np.mean(residuals(law, df, n) ** 2)))
    lines += [f"## Fit on {name}", "",
              f"E {float(law.E):.3g}, A {float(law.A):.3g}, alpha {float(law.alpha):.3g}, "
              f"B {float(law.B):.3g}, beta {float(law.beta):.3g}; RMS log-residual {rms:.4f}", "",
              "| method | runs | points | mean residual | 95% CI | on the curve |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.runs} | {r.points} | {r.mean_resid:+.4f} | [{r.low:+.4f}, "
              f"{r.high:+.4f}] | {'yes' if r.on_curve else 'no'} |" for r in table.itertuples()]
    off = table.loc[~table["on_curve"], "method"].tolist()
    lines += ["", "All methods fall on one curve." if not off else
              f"Off the shared curve: {', '.join(off)}.", ""]
  return "\n".join(lines), laws["n_avg"]


def plot(df: pd.DataFrame, law: fits.Chinchilla, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for method, group in sorted(df.groupby("method")):
    ax.scatter(law.loss(group["n_avg"], group["examples"]), group["eval_loss"], s=12, label=method)
  lims = [df["eval_loss"].min(), df["eval_loss"].max()]
  ax.plot(lims, lims, "k--", lw=1)
  ax.set(xlabel="fitted L(N̄, D)", ylabel="eval loss", title="one law on the time-averaged N̄")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("dirs", nargs="+")
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  try:
    df = load(args.dirs)
    text, law = report(df)
    os.makedirs(args.out, exist_ok=True)
    plot(df, law, os.path.join(args.out, "sparse_law.png"))
  except AnalysisError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with open(os.path.join(args.out, "sparse_law.md"), "w") as f:
    f.write(text + "\n")
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
