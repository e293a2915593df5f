"""Synthetic sweeps with known answers, written as runs write them (config.json + metrics.jsonl)."""

import json
import os

import numpy as np
import pytest


def write_run(root, name, kind, width, curve, final=True):
  """One workdir; ``curve`` is [(flops, eval_loss)], one eval line each."""
  run = root / name
  os.makedirs(run)
  (run / "config.json").write_text(json.dumps({"seed": 0, "model": {"kind": kind, "width": width}}))
  with open(run / "metrics.jsonl", "w") as f:
    for i, (c, loss) in enumerate(curve):
      last = final and i == len(curve) - 1
      f.write(json.dumps({"step": 10 * (i + 1), "examples": 640 * (i + 1), "flops": c,
                          "train_loss": loss, "eval_loss": loss, **({"final": True} if last else {})})
              + "\n")


def write_sweep(root, k0=4.0, alpha=0.3, E=0.5, A=300.0, families=("dense", "btt"), widths=4,
                points=12):
  """Families whose frontiers are exactly E + A_f C^-alpha with A_f = A / k0^alpha (dense: A).

  Each run follows the law until its own compute budget, then flattens, so only the lower
  envelope over runs is the power law (as with real runs of growing size).
  """
  for family in families:
    a = A if family == "dense" else A / k0**alpha
    for width in range(1, widths + 1):
      c_end = 10.0 ** (9 + width)
      cs = np.geomspace(c_end / 1e3, c_end, points)
      losses = np.maximum(E + a * cs**-alpha, E + a * c_end**-alpha * 1.0)
      write_run(root, f"{family}{width}", family, width, list(zip(cs, losses)))
  return root


@pytest.fixture
def sweep(tmp_path):
  return write_sweep(tmp_path / "sweep")
