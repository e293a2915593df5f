"""ViT: shapes, pooling, FLOPs against XLA, parameter split, golden one-step loss."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.train import step
from experiments import config as run_config
from models import factory
from structured import StructureError, mup
from structured.mup import MuP

SPEC = {"image_shape": (16, 16, 3), "d_in": 16 * 16 * 3, "d_out": 10}


def vit_config(**kw):
  cfg = dict(name="vit", kind="dense", width=32, depth=1, heads=2, patch=4, pool="cls",
             expansion=4, layers="all_but_last", use_bias=False, qk_norm=True, structure={},
             overrides={}, dropout=0.0, dtype="float32", scan_layers=False, remat="none")
  return ml_collections.ConfigDict(dict(cfg, **kw))


def build(cfg, spec, *, base_depth=0, zero_init=False, parametrization="mup"):
  """``factory.build`` of a model ConfigDict section; muP against width 32, zero-init off so
  outputs are not trivially zero."""
  mup = MuP(parametrization=parametrization, base_width=32, base_depth=base_depth, rule="adam",
            eps_mup=False, zero_init=zero_init)
  return factory.build(run_config.parse_model(cfg), spec, nnx.Rngs(0), mup)


def _xla_flops(model, x):
  graphdef, state = nnx.split(model)
  cost = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, x).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_shapes_pooling_and_flat_input(pool):
  model = build(vit_config(pool=pool), SPEC)
  x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  forward = nnx.jit(lambda m, v: m(v))
  logits = forward(model, x)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(forward(model, x.reshape(3, -1)), logits)   # flattened alike
  assert model.seq_len == 16 + (pool == "cls")
  # patches are the image's p x p tiles in row-major order
  np.testing.assert_array_equal(model.patches(x)[:, 1], x[:, 0:4, 4:8].reshape(3, -1))
  # each example is pooled on its own: changing image 0 leaves the others' logits
  np.testing.assert_allclose(forward(model, x.at[0].set(0.0))[1:], logits[1:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind,width", [("dense", 256), ("btt", 4096)])
def test_vit_flops_match_xla_and_param_split(kind, width):
  cfg = vit_config(kind=kind, width=width, depth=2, heads=4, layers="all")
  model = build(cfg, SPEC)
  x = jnp.zeros((2, 16, 16, 3))
  # XLA also counts norms, softmax and GELU, which the model count leaves out: < 5% here
  # (BTT matmuls shrink as d^1.5, so it needs the larger width; at 1024 they are 4.97%)
  assert _xla_flops(model, x) == pytest.approx(2 * model.flops_per_example(), rel=0.05)
  counts = model.param_counts()
  assert counts["embedding"] == 17 * width + width   # positions (16 patches + cls) + cls token
  assert counts["total"] == counts["embedding"] + counts["non_embedding"]
  layers = mup.structured_layers(model)
  norms = 2 * width * (1 + 2 * 2) + 2 * 4 * (width // 4)   # final + 2 per block, QK-norms
  assert counts["non_embedding"] == sum(l.num_params() for l in layers.values()) + norms
  assert {type(l).kind for l in layers.values()} == {kind}


def test_vit_bad_patch_or_pool_is_one_clear_error():
  with pytest.raises(StructureError,
                     match=r"patch=5 does not tile 16x16 .*valid patch sizes: \[1, 2, 4, 8, 16\]"):
    build(vit_config(patch=5), SPEC)
  with pytest.raises(StructureError, match=r"pool='max' is unknown; valid: \['cls', 'mean'\]"):
    build(vit_config(pool="max"), SPEC)
  with pytest.raises(StructureError, match="needs an image task"):
    build(vit_config(), {"d_in": 768, "d_out": 10})


# Golden value: loss after one Adam step of a tiny BTT ViT from a fixed seed. If a deliberate
# change (init, patching, blocks) moves it, rerun this test, check the new value is sane and
# paste it here.
GOLDEN_VIT = 2.068396


def test_vit_golden_one_step():
  cfg = vit_config(kind="btt", structure={"rank": 1})
  model = build(cfg, SPEC, zero_init=True)
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32),
           "y": jnp.asarray(rng.integers(0, 10, size=8))}
  step.train_step(model, optimizer, batch, "xent")
  loss = float(step.eval_step(model, batch, "xent")["loss"])
  assert loss == pytest.approx(GOLDEN_VIT, abs=1e-4), (
      f"ViT one-step loss {loss:.6f} != golden {GOLDEN_VIT}; if the change was deliberate, "
      "update GOLDEN_VIT in tests/models/test_vit.py")
