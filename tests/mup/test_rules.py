"""muP multipliers are what the rules say: Adam and SGD width rules, depth-muP, per-core eps."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from configs import mlp_synthetic
from experiments import config as run_config
from experiments.train import loop as train, optim, paths, step
from models import factory
from structured import mup

WIDTH, BASE_WIDTH, DEPTH, BASE_DEPTH = 128, 64, 4, 2


def _config(optimizer="adamw", base_depth=0, **optim_overrides):
  config = mlp_synthetic.get_config(f"kind=low_rank,rank=8,width={WIDTH},depth={DEPTH},layers=ffn")
  with config.unlocked():
    config.batch_size, config.mesh.data = 8, 1
    config.mup.base_depth = base_depth
    config.mup.eps_mup = optim_overrides.pop("eps_mup", False)
    config.optim.name = optimizer
    config.optim.update(optim_overrides)
  return config


def _base_dims(d_in, d_out):
  """A layer's (d_in, d_out) at base width: every width-sized dim shrinks by WIDTH/BASE_WIDTH."""
  shrink = lambda d: d // (WIDTH // BASE_WIDTH) if d % WIDTH == 0 else d
  return shrink(d_in), shrink(d_out)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_width_and_depth_multipliers_follow_the_rules(optimizer):
  run = train.build(run_config.parse(_config(optimizer, base_depth=BASE_DEPTH)))
  model, mults = run.model, run.mults
  depth_factor = math.sqrt(BASE_DEPTH / DEPTH) if optimizer == "adamw" else 1.0
  branch_paths = list(mup.residual_branches(model))
  assert len(branch_paths) == DEPTH
  in_branch = lambda key: any(key[:len(b)] == b for b in branch_paths)
  checked = 0
  for path, layer in mup.structured_layers(model).items():
    d_in_base, d_out_base = _base_dims(layer.d_in, layer.d_out)
    cores = layer.cores()
    for core in cores:
      if optimizer == "sgd":
        want = core.fan_out / core.fan_in * d_in_base / d_out_base / len(cores)
      else:
        want = d_in_base / core.fan_in / len(cores)
      want *= depth_factor if in_branch(path) else 1.0
      assert mults[path + (core.name,)] == pytest.approx(want), (path, core)
      checked += 1
  assert checked == 2 + 2 * 2 * DEPTH   # dense embed and readout; 2 low-rank cores in up, down
  # Non-core parameters: 1 under Adam, numel / numel_base (the width ratio) under SGD.
  ln_scale = mults[("blocks", 0, "norm", "scale")]
  assert ln_scale == pytest.approx((WIDTH / BASE_WIDTH if optimizer == "sgd" else 1.0) * depth_factor)
  assert mults[("norm", "scale")] == pytest.approx(WIDTH / BASE_WIDTH if optimizer == "sgd" else 1.0)
  assert mults[("readout", "bias")] == 1.0


def _mup(base_depth=0, rule="adam", parametrization="mup"):
  return mup.MuP(parametrization=parametrization, base_width=BASE_WIDTH, base_depth=base_depth,
                 rule=rule, eps_mup=False, zero_init=True)


def test_depth_factor_is_one_without_base_depth_and_for_sgd():
  assert _mup(0).depth_lr_factor(16) == 1.0
  assert _mup(2, "sgd").depth_lr_factor(8) == 1.0
  assert _mup(2, "adam").depth_lr_factor(8) == 0.5
  assert _mup(2, "sgd").branch_scale(8) == 0.5
  with pytest.raises(mup.StructureError, match=r"valid: \['adam', 'sgd'\]"):
    _mup(2, "lion")
  with pytest.raises(mup.StructureError, match=r"mup.parametrization='sp' is unknown"):
    _mup(parametrization="sp")


def test_mup_owns_init_scale_zero_init_and_logit_scale():
  assert _mup().core_std(64, 256) == pytest.approx(64**-0.5)
  assert _mup().core_std(256, 64) == pytest.approx(256**-0.5 * 0.5)
  assert _mup(parametrization="standard").core_std(256, 64) == pytest.approx(256**-0.5)
  assert _mup().starts_at_zero("readout") and not _mup().starts_at_zero("hidden")
  assert not _mup(parametrization="standard").starts_at_zero("readout")
  assert _mup().attention_logit_scale(16) == 1 / 16
  assert _mup(parametrization="standard").attention_logit_scale(16) == 0.25


def test_standard_parametrization_has_unit_width_multipliers():
  config = _config("sgd")
  with config.unlocked():
    config.mup.parametrization = "standard"
  run = train.build(run_config.parse(config))
  mults = run.mults
  assert set(mults.values()) == {1.0}


def test_eps_mup_is_adam_with_per_parameter_eps():
  """Adam with b1 = b2 = 0 in closed form: update = -lr mult g / (|g| + eps eps_scale). The
  second step is checked: at the first, the zero readout stops every hidden gradient."""
  eps = 1e-4
  config = _config("adam", eps=eps, eps_mup=True, b1=0.0, b2=0.0, grad_clip=0.0,
                   warmup_steps=0, schedule="constant", lr=1.0)
  run = train.build(run_config.parse(config))
  task, model, optimizer, mults = run.task, run.model, run.optimizer, run.mults
  typed = run_config.parse(config)
  scales = typed.mup.eps_scales(model, factory.build_base(typed.model, task.spec, typed.mup))
  assert scales[("blocks", 0, "down", "v")] == pytest.approx(BASE_WIDTH / WIDTH)   # fan_out 128 vs 64
  assert scales[("readout", "w")] == 1.0   # fan_out d_out = 4 at every width
  batch = task.train_batch(0)
  step.train_step(model, optimizer, batch, task.loss)
  grads = nnx.grad(step.loss_fn)(model, batch, task.loss)
  grads = {paths.path_key(p): np.asarray(g) for p, g in jax.tree_util.tree_leaves_with_path(grads)}
  before = {k: np.asarray(p[...]) for k, p in mup.params(model).items()}
  step.train_step(model, optimizer, batch, task.loss)
  for key, p in mup.params(model).items():
    g = grads[key]
    want = -mults[key] * g / (np.abs(g) + eps * scales[key])
    np.testing.assert_allclose(np.asarray(p[...]) - before[key], want, rtol=1e-3, atol=1e-7,
                               err_msg=str(key))
  g = grads[("blocks", 0, "down", "v")]   # the check can tell the scaled eps from the plain one
  assert np.abs(g / (np.abs(g) + eps) - g / (np.abs(g) + eps * BASE_WIDTH / WIDTH)).max() > 1e-2
