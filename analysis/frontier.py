"""Compute-efficient frontier: the least loss reached at each compute, per family."""

from __future__ import annotations

import numpy as np
import pandas as pd


def envelope(df: pd.DataFrame, x: str = "flops", y: str = "eval_loss",
             final_only: bool = False) -> pd.DataFrame:
  """Lower envelope of loss vs compute over all runs of one family (running minimum).

  With ``final_only`` only end-of-schedule points count: intermediate checkpoints of a
  longer cosine schedule overstate the loss reachable at their compute.
  """
  points = df[df["final"].fillna(False).astype(bool)] if final_only and "final" in df else df
  points = points[np.isfinite(points[y])].sort_values(x)
  keep = points[y] < points[y].cummin().shift(1, fill_value=np.inf)
  return points[keep]


def hull(df: pd.DataFrame, x: str = "flops", y: str = "eval_loss") -> pd.DataFrame:
  """Lower convex hull of the envelope in log-log space (einsum-search's frontier)."""
  points = envelope(df, x, y)
  lx, ly = np.log(points[x].to_numpy()), np.log(points[y].to_numpy())
  chosen: list[int] = []
  for i in range(len(points)):
    while len(chosen) >= 2:
      a, b = chosen[-2], chosen[-1]
      cross = (lx[b] - lx[a]) * (ly[i] - ly[a]) - (ly[b] - ly[a]) * (lx[i] - lx[a])
      if cross > 0:
        break
      chosen.pop()
    chosen.append(i)
  return points.iloc[chosen]


def per_family(df: pd.DataFrame, method: str = "envelope", **kwargs) -> dict[str, pd.DataFrame]:
  fn = {"envelope": envelope, "hull": hull}[method]
  return {family: fn(group, **kwargs) for family, group in df.groupby("family")}


def compute_to_reach(front: pd.DataFrame, loss: float, x: str = "flops", y: str = "eval_loss") -> float:
  """Compute at which the frontier first reaches ``loss`` (log-log interpolation); inf if never."""
  c, l = np.log(front[x].to_numpy(float)), np.log(front[y].to_numpy(float))
  target = np.log(loss)
  hit = np.nonzero(l <= target + 1e-12)[0]
  if not len(hit):
    return float("inf")
  i = hit[0]
  if i == 0:
    return float(np.exp(c[0]))
  t = (l[i - 1] - target) / (l[i - 1] - l[i])
  return float(np.exp(c[i - 1] + t * (c[i] - c[i - 1])))
