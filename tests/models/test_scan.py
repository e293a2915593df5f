"""``model.scan_layers``: the blocks run as one scanned block and compute what they compute
unrolled (forward, gradients, dropout streams, per-layer coordinate-check outputs, sharded and
sparse training); tests/experiments/test_checkpoint_compat.py resumes an unrolled checkpoint
scanned."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import mlp_synthetic
from experiments import config as run_config, coord_check, sparsity
from experiments.train import loop, sharding, step
from models import factory
from structured.mup import MuP

SPECS = {"mlp": {"d_in": 16, "d_out": 4}, "gpt2": {"vocab": 64, "seq_len": 8},
         "vit": {"image_shape": (8, 8, 3), "d_in": 192, "d_out": 4}}
INPUTS = {"mlp": jnp.ones((2, 16)), "gpt2": jnp.arange(16).reshape(2, 8) % 64,
          "vit": jax.random.normal(jax.random.key(0), (2, 8, 8, 3))}


def _build(name, scan, **kw):
  cfg = dict(name=name, kind="btt", width=32, depth=2, heads=2, expansion=4, layers="all",
             use_bias=True, qk_norm=True, tie_embeddings=False, structure={"rank": 1}, patch=4,
             pool="cls", overrides={}, dropout=0.0, dtype="float32", scan_layers=scan)
  mup = MuP(parametrization="mup", base_width=32, base_depth=2, rule="adam", eps_mup=False,
            zero_init=False)   # zero-init off, so every layer's output and gradient is non-zero
  model_cfg = run_config.parse_model(ml_collections.ConfigDict(dict(cfg, **kw)))
  return factory.build(model_cfg, SPECS[name], nnx.Rngs(0), mup)


@nnx.jit
def _forward_and_grads(model, x):
  return nnx.value_and_grad(lambda m: jnp.mean(jnp.square(m(x))))(model)


def test_scanned_blocks_match_unrolled_with_dropout():
  name = "gpt2"   # blocks of two modules, and embedding dropout; the MLP: the sparsity test
  unrolled, scanned = (_build(name, scan, dropout=0.2) for scan in (False, True))
  for _ in range(2):   # the second call checks that every block's dropout stream advanced
    (loss, grads), (loss_s, grads_s) = (_forward_and_grads(m, INPUTS[name])
                                        for m in (unrolled, scanned))
    np.testing.assert_allclose(loss_s, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads_s, grads)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, nnx.state(scanned, nnx.RngCount),
                                   nnx.state(unrolled, nnx.RngCount)))
  assert jax.tree.leaves(nnx.state(scanned, nnx.RngCount))   # dropout on: the counts are there


def test_scanned_layout_and_coord_check_outputs_stay_per_layer():
  unrolled, scanned = _build("vit", False), _build("vit", True)
  assert (jax.tree.map(jnp.shape, nnx.state(scanned, nnx.Param))
          == jax.tree.map(jnp.shape, nnx.state(unrolled, nnx.Param)))   # checkpoints unchanged
  outputs = coord_check.layer_outputs(scanned, INPUTS["vit"])
  reference = coord_check.layer_outputs(unrolled, INPUTS["vit"])
  assert sorted(outputs) == sorted(reference) and "attn/1/q" in outputs and "ffn/0/down" in outputs
  for layer, y in reference.items():
    np.testing.assert_allclose(outputs[layer], y, rtol=1e-5, atol=1e-6)


def _losses(config, steps: int) -> list[float]:
  parsed = run_config.parse(config)
  run = loop.build(parsed)
  plan = sparsity.make_plan(parsed, run.model)
  return [float(step.train_step(run.model, run.optimizer,
                                sharding.shard_batch(run.task.train_batch(i), run.mesh),
                                run.task.loss, sparsity_plan=plan))
          for i in range(1, steps + 1)]


def test_scanned_blocks_on_an_fsdp_mesh_match_unrolled_on_one_device():
  def config(scan, mesh):
    config = mlp_synthetic.get_config("runlocal,kind=btt")   # 3 blocks
    with config.unlocked():
      config.model.scan_layers = scan
      config.mesh.update(mesh)
    return config
  single = _losses(config(False, dict(data=1, fsdp=1)), 3)
  fsdp = _losses(config(True, dict(data=2, fsdp=4)), 3)
  np.testing.assert_allclose(fsdp, single, rtol=1e-5)


def test_scanned_moving_mask_sparsity_matches_unrolled():
  def config(scan):
    config = mlp_synthetic.get_config("runlocal,kind=sparse")
    with config.unlocked():
      config.model.scan_layers, config.mesh.data = scan, 1
      config.sparsity.update(method="rigl", delta_t=1, end_frac=1.0)
    return config
  np.testing.assert_allclose(_losses(config(True), 3), _losses(config(False), 3), rtol=1e-6)
