"""Compute multipliers and exponent differences with bootstrap CIs on families with known k0."""

import numpy as np
import pandas as pd
import pytest

from analysis import bootstrap, fits, runs
from conftest import write_run, write_sweep


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
  assert out["table"]["k_measured"].iloc[0] == out["k_measured"]   # the table starts at L*
  d_lo, d_hi = out["delta_alpha_ci"]
  assert d_lo <= 1e-9 and d_hi >= -1e-9


def test_measured_multiplier_follows_the_frontiers(tmp_path):
  """A family whose every evaluation is dense's at a quarter of the compute: k = 4 measured on
  the frontiers at every loss, whatever shape the frontier has."""
  df = runs.load([str(write_sweep(tmp_path, widths=5))])
  dense_df = df[df.family == "dense"]
  cheap_df = dense_df.assign(family="cheap", flops=dense_df["flops"] / 4)
  dense, cheap = (bootstrap.fit_family(d, n=20) for d in (dense_df, cheap_df))
  out = bootstrap.compare(dense, cheap)
  assert out["table"]["k_measured"].to_numpy() == pytest.approx(4.0, rel=1e-9)
  assert out["table"]["k"].to_numpy() == pytest.approx(4.0, rel=1e-3)


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


def _family(name, E, A, alpha, losses):
  """A FamilyFit whose frontier observed ``losses`` and whose fit (and every draw) is E + A C^-alpha."""
  law = fits.PowerLaw(E, A, alpha)
  front = pd.DataFrame({"run": [f"{name}{i}" for i in range(len(losses))], "eval_loss": losses,
                        "flops": [float(law.compute_to_reach(l)) if l > E else 1e30 for l in losses]})
  draws = fits.PowerLaw(np.full(10, E), np.full(10, A), np.full(10, alpha))
  return bootstrap.FamilyFit(name, len(losses), front, law, draws)


def test_unbounded_fitted_multiplier_is_quoted_where_both_fits_reach_and_explained():
  """The family's frontier reaches 1.05, but its fit's E = 1.1 never does: k at L* = 1.05 is
  unbounded, so the headline moves to the lowest observed loss both fits reach, with the reason."""
  dense = _family("dense", 1.0, 50.0, 0.3, [2.0, 1.5, 1.2, 1.02])
  btt = _family("btt", 1.1, 20.0, 0.3, [2.0, 1.6, 1.3, 1.05])
  out = bootstrap.compare(dense, btt)
  assert out["best_loss"] == 1.05 and out["k_at_best"] == 0.0   # btt never reaches 1.05
  h = out["headline"]
  assert h["loss"] > 1.1 and "unbounded" in h["note"] and "'btt' fit's E = 1.1" in h["note"]
  expected = dense.fit.compute_to_reach(h["loss"]) / btt.fit.compute_to_reach(h["loss"])
  assert h["k"] == pytest.approx(float(expected)) and h["ci"][0] == pytest.approx(h["k"])


def test_headline_is_the_fitted_multiplier_at_the_best_shared_loss_when_finite(tmp_path):
  df = runs.load([str(write_sweep(tmp_path, k0=4.0, widths=4))])
  dense, btt = (bootstrap.fit_family(df[df.family == f], n=20) for f in ("dense", "btt"))
  h = bootstrap.compare(dense, btt)["headline"]
  assert h["loss"] == bootstrap.overlap(dense, btt)[0] and h["k"] == pytest.approx(4.0, rel=1e-4)
  assert h["note"] == ""


def test_joint_fit_without_a_falling_n_term_falls_back_to_the_envelope(tmp_path):
  # two sizes where the larger model is worse at every data amount: the joint L(N, D) fit can
  # only explain that with a rising N term (exponent <= 0), which has no compute frontier
  tokens = np.array([1e6, 2e6, 4e6, 8e6])
  for width, worse in ((8, 1.0), (16, 1.15)):
    flops = 6 * 1e5 * width * tokens
    write_run(tmp_path, f"dense{width}", "dense", width,
              list(zip(flops, worse * (2.0 + 40 * tokens**-0.3), tokens)))
  df = runs.load([str(tmp_path)])
  joint = bootstrap.fit_family(df, n=10)
  assert joint.method == "envelope-residual" and "does not pin a falling N term" in joint.note
  envelope = bootstrap.fit_family(df, n=10, method="envelope-residual")
  assert float(joint.fit.alpha) == pytest.approx(float(envelope.fit.alpha))
  assert np.isfinite(joint.fit.compute_to_reach(joint.front["eval_loss"].min()))
