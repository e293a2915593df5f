"""Load run workdirs (``config.json`` + ``metrics.jsonl``) into one pandas DataFrame.

One row per logged evaluation (a line with ``eval_loss``); the config is flattened into dotted
columns (``model.kind``, ``model.width``, ...). Added columns: ``run`` (workdir name, or its
path where two sweeps share a name), ``workdir`` (path),
``family`` (``model.kind`` unless another column is named), ``finished`` (the run wrote its
``"final": true`` line) and ``diverged`` (a non-finite loss anywhere in the run). Runs that cannot be read are left out
with a reason (``load_runs``), never with a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import pandas as pd

import runfiles


class AnalysisError(ValueError):
  """Input the analysis cannot use; the message says what is wrong and where."""


def find_runs(paths: list[str]) -> list[str]:
  """Run workdirs among ``paths``: each path is a run or a sweep directory of runs."""
  runs = []
  for path in paths:
    if not os.path.isdir(path):
      raise AnalysisError(f"'{path}' is not a directory")
    if os.path.exists(runfiles.config_path(path)):
      runs.append(path)
      continue
    runs += sorted(os.path.join(path, d) for d in os.listdir(path)
                   if os.path.exists(runfiles.config_path(os.path.join(path, d))))
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


def read_run(run: str) -> tuple[dict, list[dict]]:
  """(config, metrics records) of one workdir, read by ``runfiles`` (the run-file format's
  owner). Raises AnalysisError naming what is wrong when either file is unusable."""
  try:
    return runfiles.read_config(run), runfiles.read_metrics(run)
  except runfiles.RunFileError as e:
    raise AnalysisError(str(e)) from None


@dataclasses.dataclass
class Loaded:
  """The runs' eval rows, and what was left out or used only in part, {run: why}."""

  df: pd.DataFrame
  left_out: dict[str, str]
  partial: dict[str, str]


def load_runs(paths: list[str], family: str = "model.kind") -> Loaded:
  """Every eval record of every readable run under ``paths``, with its flattened config; runs
  that cannot be used are left out (one stderr line each) and named with the reason."""
  frames, left_out, partial = [], {}, {}
  for run in find_runs(paths):
    name = os.path.basename(os.path.normpath(run))
    try:
      config, records = read_run(run)
    except AnalysisError as e:
      left_out[name] = str(e)
      print(f"warning: run '{run}' left out: {e}", file=sys.stderr)
      continue
    evals = [r for r in records if "eval_loss" in r]
    if not evals:
      left_out[name] = ("no metrics.jsonl" if not os.path.exists(runfiles.metrics_path(run))
                        else "metrics.jsonl has no records" if not records
                        else "no evaluation logged yet")
      continue
    notes = []
    if not records[-1].get("final"):
      notes.append(f"unfinished (last logged step {records[-1].get('step', '?')}): "
                   f"its {len(evals)} evaluations so far are used")
    if notes:
      partial[name] = "; ".join(notes)
    losses = [r.get(k) for r in records for k in ("train_loss", "eval_loss") if k in r]
    frame = pd.DataFrame(evals)
    for key, value in _flatten(config).items():
      frame[key] = [value] * len(frame)
    frame["run"] = name
    frame["workdir"] = run
    frame["finished"] = bool(records[-1].get("final"))
    frame["diverged"] = any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in losses)
    frames.append(frame)
  if not frames:
    why = "".join(f"\n  {run}: {reason}" for run, reason in sorted(left_out.items()))
    raise AnalysisError(f"no run under {paths} has logged an evaluation yet{why}")
  df = pd.concat(frames, ignore_index=True)
  if df.groupby("run")["workdir"].nunique().max() > 1:   # same name in two sweeps
    df["run"] = df["workdir"]
  if family not in df:
    raise AnalysisError(f"column '{family}' not in the runs' configs; some columns: {sorted(df)[:20]}")
  df["family"] = df[family].astype(str)
  return Loaded(df, left_out, partial)


def load(paths: list[str], family: str = "model.kind") -> pd.DataFrame:
  """``load_runs(...).df``: the eval rows of every usable run under ``paths``."""
  return load_runs(paths, family).df


def exclude_diverged(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
  """Drops diverged runs; returns the rest and {run: why} for the report."""
  bad = sorted(df.loc[df["diverged"], "run"].unique())
  if bad and len(bad) == df["run"].nunique():
    raise AnalysisError(f"all {len(bad)} runs have non-finite losses (diverged): {bad}")
  return df[~df["diverged"]], {run: "non-finite loss (diverged)" for run in bad}
