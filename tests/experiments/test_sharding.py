"""Data-parallel and FSDP runs on 8 fake CPU devices match one device."""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import mlp_synthetic
from experiments import config as run_config
from experiments import errors
from experiments.train import loop as train, sharding, step


def _losses(mesh_sizes, kind="btt", steps=20):
  config = mlp_synthetic.get_config(f"runlocal,kind={kind}")
  with config.unlocked():
    config.mesh.update(mesh_sizes)
  run = train.build(run_config.parse(config))
  task, model, optimizer, mesh = run.task, run.model, run.optimizer, run.mesh
  losses = []
  for i in range(1, steps + 1):
    loss = step.train_step(model, optimizer, sharding.shard_batch(task.train_batch(i), mesh), task.loss)
    losses.append(float(loss))
  return np.array(losses), model


@pytest.mark.parametrize("kind", ["dense", "btt"])
def test_data_parallel_and_fsdp_match_one_device(kind):
  assert jax.device_count() == 8
  single, _ = _losses(dict(data=1, fsdp=1), kind)
  data_parallel, _ = _losses(dict(data=8, fsdp=1), kind)
  fsdp, model = _losses(dict(data=2, fsdp=4), kind)
  np.testing.assert_allclose(data_parallel, single, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(fsdp, single, atol=1e-5, rtol=1e-5)
  assert single[-1] < single[0]
  split = [p for p in jax.tree.leaves(nnx.state(model, nnx.Param))
           if "fsdp" in str(p.sharding.spec)]
  assert split, "no parameter is FSDP-sharded"
  for p in split:
    assert len(p.sharding.device_set) == 8
    assert p.addressable_shards[0].data.size < p.size   # each device holds a slice


def test_param_spec_splits_largest_divisible_dim():
  assert sharding.param_spec((64, 256), 4) == jax.sharding.PartitionSpec(None, "fsdp")
  assert sharding.param_spec((6, 5), 4) == jax.sharding.PartitionSpec()
  # a stacked variable's block axis (models/stack.py) is never split: the scan walks it
  assert sharding.param_spec((256, 64), 4, stacked=True) == jax.sharding.PartitionSpec(None, "fsdp")
  assert sharding.param_spec((8, 6), 4, stacked=True) == jax.sharding.PartitionSpec()


def test_inconsistent_mesh_and_batch_are_clear_errors():
  config = mlp_synthetic.get_config("runlocal")
  with config.unlocked():
    config.mesh.data = 16
  with pytest.raises(errors.ConfigError, match="needs 16 devices; 8 are available"):
    train.build(run_config.parse(config))
  with config.unlocked():
    config.mesh.data, config.batch_size = 8, 12
  with pytest.raises(errors.ConfigError, match="batch_size=12 is not divisible by the data-parallel size 8"):
    train.build(run_config.parse(config))
