"""Power-law fits, frontiers and the CLI on synthetic runs with known answers."""

import json
import os

import numpy as np
import pytest

from analysis import __main__ as cli
from analysis import fits, frontier, runs


def test_noise_free_power_law_is_recovered():
  compute = np.geomspace(1e9, 1e13, 30)
  truth = fits.PowerLaw(E=0.5, A=300.0, alpha=0.3, objective=0.0, converged=True)
  fit = fits.fit_power_law(compute, truth.loss(compute))
  for name in ("E", "A", "alpha"):
    assert getattr(fit, name) == pytest.approx(getattr(truth, name), rel=1e-3)


def _write_run(root, name, kind, width, curve):
  run = root / name
  os.makedirs(run)
  (run / "config.json").write_text(json.dumps({"model": {"kind": kind, "width": width}}))
  with open(run / "metrics.jsonl", "w") as f:
    for i, (c, loss) in enumerate(curve):
      f.write(json.dumps({"step": i + 1, "flops": c, "eval_loss": loss,
                          **({"final": True} if i == len(curve) - 1 else {})}) + "\n")


def _sweep(root, k0=4.0, alpha=0.3, E=0.5, A=300.0):
  """Two families whose frontiers share E and alpha; the structured one needs k0x less compute."""
  for family, a in (("dense", A), ("btt", A / k0**alpha)):
    for width, c_end in ((1, 1e10), (2, 1e11), (3, 1e12), (4, 1e13)):
      cs = np.geomspace(c_end / 1e3, c_end, 12)
      # each run saturates at its own floor above the frontier, so only the envelope is a power law
      floor = E + a * c_end ** -alpha
      losses = np.maximum(E + a * cs**-alpha, floor)
      _write_run(root, f"{family}{width}", family, width, list(zip(cs, losses)))


def test_frontier_multiplier_recovers_k0(tmp_path):
  _sweep(tmp_path, k0=4.0)
  df = runs.load([str(tmp_path)])
  target = df[df.family == "dense"].eval_loss.min()
  fronts = frontier.per_family(df)
  k = frontier.compute_to_reach(fronts["dense"], target) / frontier.compute_to_reach(fronts["btt"], target)
  assert k == pytest.approx(4.0, rel=0.02)
  dense, btt = fits.fit_frontier(df[df.family == "dense"]), fits.fit_frontier(df[df.family == "btt"])
  assert float(fits.multiplier(dense, btt, 0.6)) == pytest.approx(4.0, rel=0.02)


def test_cli_writes_plot_and_summary(tmp_path):
  _sweep(tmp_path / "sweep")
  out = tmp_path / "out"
  assert cli.main([str(tmp_path / "sweep"), "--out", str(out), "--bootstrap", "20"]) == 0
  assert (out / "scaling.png").stat().st_size > 10_000
  summary = (out / "summary.md").read_text()
  assert "| btt | 4 |" in summary and "| dense | 4 |" in summary


def test_empty_directory_is_a_clear_error(tmp_path):
  with pytest.raises(SystemExit, match="no runs"):
    cli.main([str(tmp_path), "--out", str(tmp_path / "out")])
