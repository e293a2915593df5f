"""Compute multipliers and exponent differences with bootstrap CIs on families with known k0."""

import numpy as np
import pytest

from analysis import bootstrap, runs
from conftest import write_sweep


def _noisy(df, sigma, seed=0):
  rng = np.random.default_rng(seed)
  return df.assign(eval_loss=df["eval_loss"] * np.exp(rng.normal(0, sigma, len(df))))


@pytest.mark.parametrize("sigma", [0.0, 0.001])
def test_multiplier_recovers_k0(tmp_path, sigma):
  df = _noisy(runs.load([str(write_sweep(tmp_path, k0=4.0, widths=5))]), sigma)
  dense, btt = (bootstrap.fit_family(df[df.family == f], n=100) for f in ("dense", "btt"))
  out = bootstrap.compare(dense, btt)
  assert out["k_at_best"] == pytest.approx(4.0, rel=0.02)
  lo, hi = out["k_at_best_ci"]
  assert lo <= 4.0 * (1 + 1e-9) and hi >= 4.0 * (1 - 1e-9)
  assert out["table"]["k"].to_numpy() == pytest.approx(4.0, rel=0.02)   # shared alpha: constant k
  d_lo, d_hi = out["delta_alpha_ci"]
  assert d_lo <= 1e-9 and d_hi >= -1e-9


def test_multiplier_only_inside_the_shared_loss_range(tmp_path):
  df = runs.load([str(write_sweep(tmp_path))])
  dense, btt = (bootstrap.fit_family(df[df.family == f], n=10) for f in ("dense", "btt"))
  lo, hi = bootstrap.overlap(dense, btt)
  with pytest.raises(runs.AnalysisError, match="outside the shared loss range"):
    bootstrap.compare(dense, btt, losses=[lo * 0.9])


def test_run_counts_resample_whole_runs():
  counts = bootstrap.run_counts(["a", "a", "b", "c", "c", "c"], n=50, seed=1)
  assert counts.shape == (50, 6)
  assert np.all(counts[:, 0] == counts[:, 1]) and np.all(counts[:, 3] == counts[:, 5])
  assert np.all(counts[:, [0, 2, 3]].sum(1) == 3)   # 3 runs drawn per resample


def test_interval_keeps_infinite_draws():
  """Draws whose fit never reaches the loss give k = inf; they widen the interval instead of
  being dropped (dropping them once made a CI exclude its own inf point estimate)."""
  finite = np.linspace(1.0, 2.0, 90)
  lo, hi = bootstrap.interval(np.concatenate([finite, np.full(10, np.inf), [np.nan]]))
  assert lo == pytest.approx(finite[2] + 0.475 * (finite[3] - finite[2])) and hi == np.inf
  lo, hi = bootstrap.interval(np.append(finite, np.inf))   # 1 of 91: the upper end stays finite
  assert hi == pytest.approx(finite[87] + 0.75 * (finite[88] - finite[87]))
  assert bootstrap.interval([np.inf, np.inf]) == (np.inf, np.inf)
  assert np.isnan(bootstrap.interval([np.nan])).all()
