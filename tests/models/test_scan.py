"""``model.scan_layers``: the blocks are stored stacked (models/stack.py) and run as one scan,
computing what they compute unrolled (forward, gradients, dropout streams, counts, sharded
training); the two layouts convert into each other (``checkpoint.relayout``;
tests/experiments/test_checkpoint_compat.py resumes an unrolled checkpoint scanned)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import mlp_synthetic
from experiments import config as run_config, coord_check, sparsity
from experiments.errors import ConfigError
from experiments.train import checkpoint, loop, sharding, step
from models import factory
from structured import StructureError
from structured.mup import MuP

SPECS = {"mlp": {"d_in": 16, "d_out": 4}, "gpt2": {"vocab": 64, "seq_len": 8},
         "vit": {"image_shape": (8, 8, 3), "d_in": 192, "d_out": 4}}
INPUTS = {"mlp": jnp.ones((2, 16)), "gpt2": jnp.arange(16).reshape(2, 8) % 64,
          "vit": jax.random.normal(jax.random.key(0), (2, 8, 8, 3))}


def _build(name, scan, **kw):
  cfg = dict(name=name, kind="btt", width=32, depth=2, heads=2, expansion=4, layers="all",
             use_bias=True, qk_norm=True, tie_embeddings=False, structure={"rank": 1}, patch=4,
             pool="cls", overrides={}, dropout=0.0, dtype="float32", scan_layers=scan,
             remat="none")
  mup = MuP(parametrization="mup", base_width=32, base_depth=2, rule="adam", eps_mup=False,
            zero_init=False)   # zero-init off, so every layer's output and gradient is non-zero
  model_cfg = run_config.parse_model(ml_collections.ConfigDict(dict(cfg, **kw)))
  return factory.build(model_cfg, SPECS[name], nnx.Rngs(0), mup)


@nnx.jit
def _forward_and_grads(model, x):
  return nnx.value_and_grad(lambda m: jnp.mean(jnp.square(m(x))))(model)


@pytest.mark.parametrize("scan,remat", [(True, "none"), (True, "full"), (False, "dots")])
def test_blocks_match_unrolled_with_dropout(scan, remat):
  """Scanned (stacked) and rematerialized blocks compute what plain unrolled ones do."""
  name = "gpt2"   # blocks of two modules, and embedding dropout
  unrolled, other = _build(name, False, dropout=0.2), _build(name, scan, dropout=0.2, remat=remat)
  for _ in range(2):   # the second call checks that every block's dropout stream advanced
    (loss, grads), (loss_o, grads_o) = (_forward_and_grads(m, INPUTS[name])
                                        for m in (unrolled, other))
    np.testing.assert_allclose(loss_o, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads_o, checkpoint.relayout(grads, grads_o))
  counts = nnx.state(other, nnx.RngCount)
  assert jax.tree.leaves(counts)   # dropout on: the counts are there
  assert jax.tree.all(jax.tree.map(jnp.array_equal, counts,
                                   checkpoint.relayout(nnx.state(unrolled, nnx.RngCount), counts)))


def test_unknown_remat_is_refused_with_the_choices():
  with pytest.raises(StructureError, match=r"model.remat='some'.*'none', 'full', 'dots'"):
    _build("mlp", False, remat="some")


@pytest.mark.parametrize("name", ["mlp", "gpt2", "vit"])
def test_stacked_layout_converts_both_ways_and_counts_the_same(name):
  unrolled, scanned = _build(name, False), _build(name, True)
  shapes = jax.tree.map(jnp.shape, nnx.state(scanned, nnx.Param))
  flat = {"/".join(map(str, p)): s for p, s in nnx.to_flat_state(shapes)}
  assert flat["blocks/stacked/up/w0" if name == "mlp" else "attn/stacked/q/w0"][0] == 2   # depth
  state, state_s = nnx.state(unrolled), nnx.state(scanned)   # same seed: the same values
  for a, b in ((checkpoint.relayout(state, state_s), state_s),
               (checkpoint.relayout(state_s, state), state)):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)
  assert scanned.param_counts() == unrolled.param_counts()
  assert scanned.flops_per_example() == unrolled.flops_per_example()


def test_coord_check_outputs_need_blocks_per_layer():
  with pytest.raises(ValueError, match="scan_layers=False"):
    coord_check.layer_outputs(_build("vit", True), INPUTS["vit"])


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


def test_moving_masks_refuse_stacked_blocks():
  config = mlp_synthetic.get_config("runlocal,kind=sparse")
  with config.unlocked():
    config.model.scan_layers = True
    config.sparsity.method = "rigl"
  with pytest.raises(ConfigError, match="scan_layers=False"):
    run_config.parse(config)


@pytest.mark.parametrize("kind", ["nm_sparse", "block_sparse"])
def test_fixed_mask_kinds_scan_as_unrolled(kind):
  """Masks and block coordinates are variables too: stacked, each block keeps its own."""
  def config(scan):
    config = mlp_synthetic.get_config(f"runlocal,kind={kind}")
    with config.unlocked():
      config.model.scan_layers, config.mesh.data = scan, 1
    return config
  np.testing.assert_allclose(_losses(config(True), 2), _losses(config(False), 2), rtol=1e-6)
