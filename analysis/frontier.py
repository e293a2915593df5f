"""Compute-efficient frontier: the least loss reached at each compute, per family."""

from __future__ import annotations

import numpy as np
import pandas as pd


def envelope_mask(compute_N, loss_N, include_BxN=None) -> np.ndarray:
  """Which points lie on the lower envelope (running minimum of loss over increasing compute).

  ``include_BxN`` (e.g. the runs drawn by each bootstrap resample) gives one envelope per row;
  returns [B, N] (or [N] without it). Ties keep the first point, so duplicates never count twice.
  """
  compute, loss = np.asarray(compute_N, float), np.asarray(loss_N, float)
  include = np.ones((1, len(loss)), bool) if include_BxN is None else np.asarray(include_BxN, bool)
  order = np.argsort(compute, kind="stable")
  loss_BxN = np.where(include[:, order] & np.isfinite(loss[order]), loss[order], np.inf)
  best_before = np.concatenate([np.full((len(include), 1), np.inf),
                                np.minimum.accumulate(loss_BxN, axis=1)[:, :-1]], axis=1)
  mask = np.zeros_like(include)
  mask[:, order] = loss_BxN < best_before
  return mask if include_BxN is not None else mask[0]


def envelope(df: pd.DataFrame, x: str = "flops", y: str = "eval_loss",
             final_only: bool = False) -> pd.DataFrame:
  """Lower envelope of loss vs compute over all runs of one family, sorted by compute.

  With ``final_only`` only end-of-schedule points count: intermediate checkpoints of a
  longer cosine schedule overstate the loss reachable at their compute.
  """
  points = df[df["final"].fillna(False).astype(bool)] if final_only and "final" in df else df
  return points[envelope_mask(points[x], points[y])].sort_values(x)


def hull(df: pd.DataFrame, x: str = "flops", y: str = "eval_loss",
         final_only: bool = False) -> pd.DataFrame:
  """Lower convex hull of the envelope in log-log space (einsum-search's frontier)."""
  points = envelope(df, x, y, final_only)
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
  """``method`` ('envelope' or 'hull') frontier of each family."""
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
