"""Matplotlib figures of frontiers and fits; each returns the Figure (notebooks) and can save it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() in ("", "agg") else None
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.fits import PowerLaw


def frontiers(df: pd.DataFrame, fronts: dict[str, pd.DataFrame], fits: dict[str, PowerLaw],
              bands: dict[str, list[PowerLaw]] | None = None, x: str = "flops",
              y: str = "eval_loss", path: str | None = None):
  """Loss vs compute (log-log): all points faint, each family's frontier and fitted curve."""
  fig, ax = plt.subplots(figsize=(7, 5))
  for i, (family, front) in enumerate(sorted(fronts.items())):
    color = f"C{i}"
    points = df[df["family"] == family]
    ax.scatter(points[x], points[y], s=6, alpha=0.2, color=color)
    ax.scatter(front[x], front[y], s=18, color=color)
    grid = np.geomspace(points[x].min(), points[x].max(), 200)
    if family in fits:
      fit = fits[family]
      ax.plot(grid, fit.loss(grid), color=color,
              label=f"{family}: E={fit.E:.3g}, alpha={fit.alpha:.3g}")
      if bands and bands.get(family):
        curves = np.array([b.loss(grid) for b in bands[family]])
        lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
        ax.fill_between(grid, lo, hi, color=color, alpha=0.15)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("training compute (FLOPs)")
  ax.set_ylabel(y.replace("_", " "))
  ax.set_title("compute frontier and fit L(C) = E + A C^-alpha")
  ax.legend(fontsize=8)
  fig.tight_layout()
  if path:
    fig.savefig(path, dpi=120)
  return fig
