"""Matplotlib figures of frontiers and fits; each returns its Figure (for notebooks) and saves
it to ``path`` when given. Uses the Agg backend unless a display backend is already active."""

from __future__ import annotations

import os
import warnings

import matplotlib

if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend():
  matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.bootstrap import FamilyFit


def _finish(fig, ax, path):
  ax.legend(fontsize=8)
  # Drawing was most of the CLI's plotting time, so: fixed margins (tight_layout took a third),
  # the title at a fixed height (placing it measures every tick label), and log minor ticks at
  # 2, 3 and 5 only on axes spanning a decade or more (8 a decade made ~90 ticks a figure);
  # shorter log axes keep matplotlib's minor ticks, their only labelled ones
  fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.92)
  ax.set_title(ax.get_title(), y=1.01)   # y given: matplotlib skips its auto-placement
  for axis in (ax.xaxis, ax.yaxis):
    low, high = sorted(axis.get_view_interval())
    if axis.get_scale() == "log" and low > 0 and high >= 10 * low:
      axis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 3.0, 5.0)))
  if path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
  return fig


def frontiers(df: pd.DataFrame, results: dict[str, FamilyFit], x: str = "flops",
              y: str = "eval_loss", path: str | None = None):
  """Loss vs compute (log-log): every eval point faint, each family's frontier, fitted
  L(C) = E + A C^-alpha and its 95% bootstrap band."""
  fig, ax = plt.subplots(figsize=(7, 5))
  for i, (family, r) in enumerate(sorted(results.items())):
    color = f"C{i}"
    points = df[df["family"] == family]
    ax.scatter(points[x], points[y], s=5, alpha=0.15, color=color)
    ax.scatter(r.front[x], r.front[y], s=16, color=color)
    grid = np.geomspace(points[x].min(), points[x].max(), 200)
    ax.plot(grid, r.fit.loss(grid), color=color,
            label=f"{family}: alpha={r.fit.alpha:.3g}, E={r.fit.E:.3g}")
    with warnings.catch_warnings():   # a grid point where every draw is degenerate: no band there
      warnings.simplefilter("ignore", RuntimeWarning)
      lo, hi = np.nanpercentile(r.draws.loss(grid), [2.5, 97.5], axis=0)
    ax.fill_between(grid, lo, hi, color=color, alpha=0.15, lw=0)
  ax.set(xscale="log", yscale="log", xlabel="training compute (FLOPs)",
         ylabel=y.replace("_", " "), title="compute frontier and fit L(C) = E + A C^-alpha")
  return _finish(fig, ax, path)


def multipliers(comparisons: dict[str, dict], reference: str, path: str | None = None):
  """Compute multiplier k(L) = C_reference(L) / C_family(L), fitted with its 95% band (line) and
  measured on the two frontiers (crosses), vs loss."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (family, c) in enumerate(sorted(comparisons.items())):
    t = c["table"][np.isfinite(c["table"]["k"]) & (c["table"]["k"] > 0)]
    ax.plot(t["loss"], t["k"], color=f"C{i}", marker="o", ms=3, label=family)
    ax.fill_between(t["loss"], t["k_lo"], t["k_hi"], color=f"C{i}", alpha=0.15, lw=0)
    ax.plot(c["table"]["loss"], c["table"]["k_measured"], color=f"C{i}", marker="x", ls="none")
  ax.axhline(1, color="gray", lw=0.8, ls="--")
  ax.set(xscale="log", yscale="log", xlabel="target loss L", ylabel=f"k = C_{reference} / C_family",
         title=f"compute multiplier vs {reference} (observed loss range)")
  return _finish(fig, ax, path)


def residuals(results: dict[str, FamilyFit], x: str = "flops", y: str = "eval_loss",
              path: str | None = None):
  """log(fit) - log(observed) on each family's frontier points, vs compute."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (family, r) in enumerate(sorted(results.items())):
    res = np.log(r.fit.loss(r.front[x])) - np.log(r.front[y].to_numpy())
    ax.plot(r.front[x], res, color=f"C{i}", marker="o", ms=3, label=family)
  ax.axhline(0, color="gray", lw=0.8)
  ax.set(xscale="log", xlabel="training compute (FLOPs)", ylabel="log fit - log observed",
         title="frontier residuals")
  return _finish(fig, ax, path)


def exponents(results: dict[str, FamilyFit], path: str | None = None):
  """Fitted alpha per family with its 95% bootstrap interval."""
  fig, ax = plt.subplots(figsize=(5, 3.5))
  names = sorted(results)
  alpha = np.array([results[n].fit.alpha for n in names])
  ci = np.array([results[n].ci("alpha") for n in names])
  ax.bar(names, alpha, yerr=np.abs(ci.T - alpha), capsize=4,
         color=[f"C{i}" for i in range(len(names))], label="alpha, 95% CI")
  ax.set(ylabel="alpha", title="scaling exponents L = E + A C^-alpha")
  return _finish(fig, ax, path)
