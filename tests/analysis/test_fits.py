"""Noise-free recovery of known laws, allocation identity, isoFLOP and hold-out on exact data."""

import numpy as np
import pytest

from analysis import fits


def test_power_law_recovered_from_noise_free_points():
  compute = np.geomspace(1e9, 1e13, 30)
  truth = fits.PowerLaw(E=0.5, A=300.0, alpha=0.3)
  fit = fits.fit_power_law(compute, truth.loss(compute))
  assert fit.converged
  for name in ("E", "A", "alpha"):
    assert getattr(fit, name) == pytest.approx(getattr(truth, name), rel=1e-3)


def test_chinchilla_recovered_from_noise_free_points():
  """Hoffmann et al.'s TeX parameters on a grid of (N, D) spanning Chinchilla's range."""
  truth = fits.Chinchilla(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491)
  n_params, n_data = (a.ravel() for a in np.meshgrid(np.geomspace(7e7, 1.6e10, 12),
                                                     np.geomspace(5e9, 5e11, 10)))
  fit = fits.fit_chinchilla(n_params, n_data, truth.loss(n_params, n_data))
  assert fit.converged
  for name in ("E", "A", "B", "alpha", "beta"):
    assert getattr(fit, name) == pytest.approx(getattr(truth, name), rel=1e-3)


def test_compute_optimal_allocation_spends_the_budget():
  law = fits.Chinchilla(E=1.817, A=482.0, B=2085.0, alpha=0.348, beta=0.366)
  compute = np.geomspace(1e20, 1e24, 5)
  n_opt, d_opt = law.compute_optimal(compute)
  np.testing.assert_allclose(6 * n_opt * d_opt, compute, rtol=1e-12)
  slope = np.polyfit(np.log(compute), np.log(n_opt), 1)[0]
  assert slope == pytest.approx(0.366 / (0.348 + 0.366), rel=1e-9)
  # N_opt minimises L along C = 6 N D
  n = n_opt[2] * np.array([0.9, 1.0, 1.1])
  assert np.argmin(law.loss(n, compute[2] / (6 * n))) == 1


def test_isoflop_finds_the_optimal_size_exponent():
  law = fits.Chinchilla(E=1.7, A=400.0, B=400.0, alpha=0.34, beta=0.28)
  compute = np.repeat(np.geomspace(1e18, 1e21, 6), 9)
  n_opt = law.compute_optimal(compute)[0]
  n_params = n_opt * np.tile(np.geomspace(0.25, 4, 9), 6)
  budgets, slope, _ = fits.isoflop(n_params, compute, law.loss(n_params, compute / (6 * n_params)))
  assert len(budgets) == 6
  assert slope == pytest.approx(0.28 / 0.62, abs=0.01)   # parabola in log N: approximate


def test_holdout_of_exact_law_extrapolates_exactly():
  compute = np.geomspace(1e9, 1e14, 20)
  truth = fits.PowerLaw(E=1.0, A=50.0, alpha=0.2)
  out = fits.holdout(compute, truth.loss(compute), cut=1e13)
  assert len(out["log_error"]) == 4 and out["rmsle"] < 1e-6

