"""Synthetic sweeps with known answers, written as runs write them (config.json + metrics.jsonl)."""

import json
import os

import pytest

from analysis import calibration


def write_run(root, name, kind, width, curve, final=True):
  """One workdir; ``curve`` is [(flops, eval_loss)] or [(flops, eval_loss, tokens)], one eval
  line each."""
  run = root / name
  os.makedirs(run)
  (run / "config.json").write_text(json.dumps({"seed": 0, "model": {"kind": kind, "width": width}}))
  with open(run / "metrics.jsonl", "w") as f:
    for i, (c, loss, *tokens) in enumerate(curve):
      last = final and i == len(curve) - 1
      f.write(json.dumps({"step": 10 * (i + 1), "examples": 640 * (i + 1), "flops": c,
                          **({"tokens": tokens[0]} if tokens else {}),
                          "train_loss": loss, "eval_loss": loss, **({"final": True} if last else {})})
              + "\n")


def write_sweep(root, k0=4.0, families=("dense", "btt"), widths=4, noise=0.0, seed=0):
  """``analysis.calibration``'s synthetic sweep written as runs: evaluations follow
  L(N, D) = E + a (m N)^-p + b D^-q with m = 1 for dense and k0 for the others, so every
  family's frontier is E + G C^-alpha (alpha = calibration.true_alpha()) and k = k0 exactly."""
  df = calibration.sweep(seed, noise, widths=widths,
                         families={f: 1.0 if f == "dense" else k0 for f in families})
  for (family, run), g in df.groupby(["family", "run"]):
    write_run(root, run, family, int(run[len(family):]),
              list(zip(g["flops"], g["eval_loss"], g["tokens"])))
  return root


@pytest.fixture
def sweep(tmp_path):
  return write_sweep(tmp_path / "sweep")
