"""Load run workdirs (``config.json`` + ``metrics.jsonl``) into one pandas DataFrame.

One row per logged evaluation (a line with ``eval_loss``); the config is flattened into dotted
columns (``model.kind``, ``model.width``, ...). Added columns: ``run`` (workdir name, or its
path where two sweeps share a name), ``workdir`` (path),
``family`` (``model.kind`` unless another column is named), ``finished`` (the run wrote its
``"final": true`` line) and ``diverged`` (a non-finite loss anywhere in the run).
"""

from __future__ import annotations

import json
import math
import os

import pandas as pd


class AnalysisError(ValueError):
  """Input the analysis cannot use; the message says what is wrong and where."""


def find_runs(paths: list[str]) -> list[str]:
  """Run workdirs among ``paths``: each path is a run or a sweep directory of runs."""
  runs = []
  for path in paths:
    if not os.path.isdir(path):
      raise AnalysisError(f"'{path}' is not a directory")
    if os.path.exists(os.path.join(path, "config.json")):
      runs.append(path)
      continue
    runs += sorted(os.path.join(path, d) for d in os.listdir(path)
                   if os.path.exists(os.path.join(path, d, "config.json")))
  if not runs:
    raise AnalysisError(f"no runs (folders with config.json) under {paths}")
  return runs


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _records(run: str) -> list[dict]:
  path = os.path.join(run, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue   # a line cut short by a killed run
  return records


def load(paths: list[str], family: str = "model.kind") -> pd.DataFrame:
  """Every eval record of every run under ``paths``, with its flattened config."""
  frames = []
  for run in find_runs(paths):
    with open(os.path.join(run, "config.json")) as f:
      config = _flatten(json.load(f))
    records = _records(run)
    evals = [r for r in records if "eval_loss" in r]
    if not evals:
      continue
    losses = [r.get(k) for r in records for k in ("train_loss", "eval_loss") if k in r]
    diverged = any(v is None or not math.isfinite(v) for v in losses)
    frame = pd.DataFrame(evals)
    for key, value in config.items():
      frame[key] = [value] * len(frame)
    frame["run"] = os.path.basename(os.path.normpath(run))
    frame["workdir"] = run
    frame["finished"] = bool(records[-1].get("final"))
    frame["diverged"] = diverged
    frames.append(frame)
  if not frames:
    raise AnalysisError(f"no run under {paths} has logged an evaluation yet")
  df = pd.concat(frames, ignore_index=True)
  if df.groupby("run")["workdir"].nunique().max() > 1:   # same name in two sweeps
    df["run"] = df["workdir"]
  if family not in df:
    raise AnalysisError(f"column '{family}' not in the runs' configs; some columns: {sorted(df)[:20]}")
  df["family"] = df[family].astype(str)
  return df


def exclude_diverged(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
  """Drops diverged runs; returns the rest and {run: why} for the report."""
  bad = sorted(df.loc[df["diverged"], "run"].unique())
  if bad and len(bad) == df["run"].nunique():
    raise AnalysisError(f"all {len(bad)} runs have non-finite losses (diverged): {bad}")
  return df[~df["diverged"]], {run: "non-finite loss (diverged)" for run in bad}
