"""Coordinate checks: under muP every layer's update is O(1) in width (Adam and SGD) and, under
depth-muP, the residual stream's update is O(1) in depth; without them it is not.

Each test runs only its own family, so ``pytest -n 2`` splits the work instead of repeating it.
"""

import inspect

import pytest

from configs import mlp_synthetic
from configs.structure import StructureSpec
from experiments import coord_check
from structured.blast import Blast

WIDTHS = [64, 512, 2048]   # 5 octaves; each width is one jit compile per family
# BLAST needs a rank that grows with width: at a fixed rank r its input bases (p -> r) shrink
# activations by sqrt(r / p) and dh falls as width^-0.6 (measured at rank 16).
BLAST = pytest.param("kind=blast,blocks=2,rank_frac=0.5", marks=pytest.mark.skipif(
    "rank_frac" not in inspect.signature(Blast.__init__).parameters,
    reason="structured/blast.py has no rank_frac (a fixed rank is a width bottleneck)"))
FAMILIES = ["kind=dense", "kind=low_rank,rank_frac=0.25", "kind=kronecker", "kind=monarch", "kind=btt", BLAST]
MAX_SLOPE = 0.15


def _config(parametrization="mup", width=64, depth=1, **optim):
  config = mlp_synthetic.get_config(f"width={width},depth={depth},param={parametrization}")
  with config.unlocked():
    config.batch_size = 32
    config.mesh.data = 1
    config.model.layers = "all_but_last"
    # Zero-init readouts make the first gradients tiny (~1e-8 at width 2048): Adam's eps must
    # shrink with width like them (eps_mup), or eps damps wide models and fakes a negative slope.
    config.mup.eps_mup = optim.pop("eps_mup", True)
    config.optim.update(optim)
  return config


def _slopes(config, kind, widths=WIDTHS):
  slopes = coord_check.slopes(coord_check.run(config, [StructureSpec.parse(kind)], widths))
  assert len(slopes) == 4   # embed, up, down, readout
  return slopes


@pytest.mark.parametrize("kind", FAMILIES)
def test_mup_updates_do_not_grow_with_width(kind):
  slopes = _slopes(_config(), kind)
  bad = slopes[slopes["slope"].abs() > MAX_SLOPE]
  assert bad.empty, f"{kind}: layers whose dh scales with width under muP:\n{bad}"


def test_standard_parametrization_fails_the_check():
  slopes = _slopes(_config("standard"), "kind=dense").set_index("layer")["slope"]
  assert slopes["blocks/0/up"] > 0.3 and slopes["blocks/0/down"] > 0.3


def test_plain_adam_eps_fakes_a_negative_slope():
  """The failure eps_mup fixes: a fixed eps 1e-8 swamps wide low-rank models' tiny gradients."""
  slopes = _slopes(_config(eps_mup=False, eps=1e-8), "kind=low_rank,rank_frac=0.25", [64, 2048])
  assert slopes["slope"].min() < -MAX_SLOPE


@pytest.mark.parametrize("kind", ["kind=dense", "kind=btt"])
def test_sgd_mup_updates_do_not_grow_with_width(kind):
  """SGD's rule, lr ~ fan_out / fan_in per core (momentum-free, unclipped, no warmup)."""
  config = _config(name="sgd", lr=1e-2, b1=0.0, grad_clip=0.0, warmup_steps=0)
  slopes = _slopes(config, kind, [64, 256, 1024])
  bad = slopes[slopes["slope"].abs() > MAX_SLOPE]
  assert bad.empty, f"{kind}: layers whose dh scales with width under SGD muP:\n{bad}"


def test_depth_mup_residual_update_does_not_grow_with_depth():
  """Depth 2 -> 16 at width 64: with depth-muP (branches and Adam lr x sqrt(2 / depth)) the
  residual stream's dh stays put; without it every block adds its own O(1) update."""
  slope = {}
  for base_depth in (2, 0):
    config = _config()
    with config.unlocked():
      config.mup.base_depth = base_depth
    df = coord_check.run_depth(config, [2, 16])
    slope[base_depth] = coord_check.slopes(df, against="depth")["slope"].item()
  assert abs(slope[2]) <= MAX_SLOPE, slope
  assert slope[0] > 0.7, slope
