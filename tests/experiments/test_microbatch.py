"""Gradient accumulation: the batch scanned in microbatches takes the full-batch step."""

import jax
import numpy as np
import pytest
from flax import nnx

import runfiles
from configs import gpt2_bytes, mlp_synthetic
from experiments import config as run_config
from experiments.errors import ConfigError
from experiments.train import loop, sharding, step


def _ten_steps(config, microbatches):
  run = loop.build(run_config.parse(config))
  losses = [float(step.train_step(run.model, run.optimizer,
                                  sharding.shard_batch(run.task.train_batch(i), run.mesh),
                                  run.task.loss, microbatches)) for i in range(1, 11)]
  return np.array(losses), jax.tree.leaves(nnx.state(run.model, nnx.Param))


@pytest.mark.parametrize("module, arg, mesh, optimizer", [
    (mlp_synthetic, "runlocal,kind=btt", dict(data=2, fsdp=4), "adamw"),
    # GPT-2 has near-zero parameters whose Adam steps turn rounding into lr-sized moves
    (gpt2_bytes, "runlocal", dict(data=8, fsdp=1), "sgd")])
def test_accumulated_step_equals_the_full_batch_step(module, arg, mesh, optimizer):
  config = module.get_config(arg)
  with config.unlocked():
    config.mesh.update(mesh)
    config.optim.name = optimizer
    config.batch_size = 32 if module is mlp_synthetic else 16   # 4 (2) rows per device
  full_losses, full = _ten_steps(config, 1)
  split_losses, split = _ten_steps(config, 4 if module is mlp_synthetic else 2)
  np.testing.assert_allclose(split_losses, full_losses, atol=1e-5, rtol=0)
  for a, b in zip(full, split, strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def test_accounting_is_unchanged_and_bad_counts_are_clear_errors(tmp_path):
  records = {}
  for m in (1, 4):
    config = mlp_synthetic.get_config("runlocal")
    with config.unlocked():
      config.microbatches, config.steps = m, 10
    loop.train_and_evaluate(run_config.parse(config), str(tmp_path / str(m)))
    records[m] = runfiles.read_metrics(str(tmp_path / str(m)))
  for a, b in zip(records[1], records[4], strict=True):
    assert (a["step"], a["examples"], a["tokens"], a["flops"]) == \
        (b["step"], b["examples"], b["tokens"], b["flops"])
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
  config = mlp_synthetic.get_config("runlocal")   # batch 32 on 8 devices: 4 rows each
  with config.unlocked():
    config.microbatches = 8
  with pytest.raises(ConfigError, match=r"batch_size=32 is not divisible by the data-parallel "
                     r"size 8 \(mesh data x fsdp\) x microbatches=8; use a multiple of 64"):
    loop.build(run_config.parse(config))
