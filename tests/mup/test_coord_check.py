"""Coordinate checks: under muP every layer's update is O(1) in width; under SP it is not."""

import pytest

from configs import mlp_synthetic
from experiments import coord_check

WIDTHS = [64, 256, 1024, 2048]
FAMILIES = ["dense", "low_rank:rank_frac=0.25", "kronecker", "monarch", "btt"]


def _config(parametrization):
  config = mlp_synthetic.get_config(f"depth=1,param={parametrization}")
  with config.unlocked():
    config.batch_size = 32
    config.mesh.data = 1
    config.model.layers = "all_but_last"
    # Zero-init readouts make the first gradients tiny (~1e-8 at width 2048); Adam's eps must sit
    # below them or it damps wide models' updates and fakes a negative slope (muP scales eps ~ 1/width).
    config.optim.eps = 1e-15
  return config


@pytest.fixture(scope="module")
def mup_slopes():
  df = coord_check.run(_config("mup"), FAMILIES, WIDTHS)
  return coord_check.slopes(df)


@pytest.mark.parametrize("kind", FAMILIES)
def test_mup_updates_do_not_grow_with_width(mup_slopes, kind):
  slopes = mup_slopes[mup_slopes["kind"] == kind]
  assert len(slopes) == 4   # embed, up, down, readout
  bad = slopes[slopes["slope"].abs() > 0.15]
  assert bad.empty, f"{kind}: layers whose dh scales with width under muP:\n{bad}"


def test_standard_parametrization_fails_the_check():
  df = coord_check.run(_config("standard"), ["dense"], WIDTHS)
  slopes = coord_check.slopes(df).set_index("layer")["slope"]
  assert slopes["blocks/0/up"] > 0.3 and slopes["blocks/0/down"] > 0.3
