"""Approach 3 on Epoch AI's 240 points extracted from Chinchilla's Figure 4 reproduces
Besiroglu et al. (2024), not Hoffmann et al. (2022)."""

import numpy as np
import pytest

from analysis import bootstrap, fits, solver
from analysis.data import epoch_chinchilla


@pytest.fixture(scope="module")
def epoch():
  return epoch_chinchilla()   # vendored in analysis/data/, so a fresh clone runs these tests


@pytest.fixture(scope="module")
def fit(epoch):
  return fits.fit_chinchilla(*epoch)


def test_approach3_matches_epoch(epoch, fit):
  assert len(epoch[2]) == 240
  assert fit.converged
  assert fit.E == pytest.approx(1.817, abs=0.005)
  assert fit.alpha == pytest.approx(0.347, abs=0.004)
  assert fit.beta == pytest.approx(0.367, abs=0.006)
  assert fit.objective <= 1.0184e-3


def test_fit_beats_hoffmann_parameters(epoch, fit):
  """Hoffmann's TeX-source parameters score ~1.231e-3 on the same data and objective."""
  theta = np.array([np.log(406.40), np.log(410.72), np.log(1.6934), 0.33917, 0.28491])
  n_params, n_data, loss = epoch
  hoffmann = solver.grid_objectives(fits.chinchilla_log, theta[None], (np.log(n_params),
                                    np.log(n_data)), np.log(loss))[0, 0]
  assert hoffmann == pytest.approx(1.2312e-3, rel=1e-3)
  assert fit.objective < hoffmann


def test_bootstrap_interval_for_alpha(epoch, fit):
  """Resampling the 240 points (each its own run), as Epoch did: alpha 95% CI ~ (0.32, 0.37)."""
  n_params = epoch[0]
  weights = bootstrap.run_counts(np.arange(len(n_params)), n=400, seed=0)
  draws = fits.fit_chinchilla(*epoch, weights_BxN=weights, warm=fit)
  assert np.mean(draws.converged) > 0.99
  lo, hi = bootstrap.interval(draws.alpha)
  assert lo == pytest.approx(0.32, abs=0.01) and hi == pytest.approx(0.37, abs=0.01)
