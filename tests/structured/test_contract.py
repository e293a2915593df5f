"""Every registered family honours the contract: dense equivalence, parameter count, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from pallas_kernels import backend
from structured import StructureError
from structured.mup import MuP
from structured.masked import Mask

SHAPES = [(64, 64), (64, 144), (144, 64)]
HPARAMS = {"low_rank": {"rank": 3}, "btt": {"rank": 2}, "monarch": {"blocks": 4},
           "kronecker": {"factors": 2}}

MUP = MuP(parametrization="mup", base_width=64, base_depth=0, rule="adam", eps_mup=False,
          zero_init=True)



@pytest.mark.parametrize("kind", sorted(structured.FAMILIES))
@pytest.mark.parametrize("d_in,d_out", SHAPES)
def test_layer_applies_its_dense_matrix(kind, d_in, d_out):
  layer = structured.make(kind, d_in, d_out, rngs=nnx.Rngs(0), **HPARAMS.get(kind, {}))
  x = jax.random.normal(jax.random.key(1), (2, 3, d_in))
  y = layer(x)
  want = x @ layer.to_dense()
  assert y.shape == (2, 3, d_out)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("kind", sorted(structured.FAMILIES))
def test_num_params_counts_the_leaves(kind):
  layer = structured.make(kind, 64, 144, rngs=nnx.Rngs(0), use_bias=True, **HPARAMS.get(kind, {}))
  leaves = jax.tree.leaves(nnx.state(layer, nnx.Param))
  masked_zeros = sum(int((~m).sum()) for m in jax.tree.leaves(nnx.state(layer, Mask)))
  assert layer.num_params() == sum(leaf.size for leaf in leaves) - masked_zeros


@pytest.mark.parametrize("kind", sorted(structured.FAMILIES))
@pytest.mark.parametrize("role", ["residual_out", "readout"])
def test_mup_zero_init_zeroes_the_output_and_nothing_else(kind, role):
  """muP starts residual-branch outputs and the readout at zero: every term of a sum family
  (sparse + low-rank) too, while the other cores keep their init so gradients reach them."""
  layer = structured.make(kind, 64, 144, role=role, rngs=nnx.Rngs(0), mup=MUP,
                          **HPARAMS.get(kind, {}))
  assert not jnp.any(layer.to_dense())
  zeroed = set(layer.zero_init_cores())
  for core in layer.cores():
    assert jnp.any(getattr(layer, core.name)[...]) == (core.name not in zeroed), core.name


def test_closed_forms():
  rngs = nnx.Rngs(0)
  btt = structured.make("btt", 64, 144, rngs=rngs, rank=2)   # 64 = 8*8, 144 = 12*12
  assert btt.num_params() == 2 * (64 * 12 + 144 * 8) == btt.flops_per_token() // 2
  low = structured.make("low_rank", 64, 144, rngs=rngs, rank=3)
  assert low.num_params() == 3 * (64 + 144) == low.flops_per_token() // 2
  monarch = structured.make("monarch", 64, 144, rngs=rngs, blocks=4)   # min(n,m)(n+m)/b
  assert monarch.num_params() == 64 * (64 + 144) // 4 == monarch.flops_per_token() // 2
  kron = structured.make("kronecker", 64, 144, rngs=rngs)   # (8x12) (x) (8x12)
  assert kron.num_params() == 2 * 8 * 12
  assert kron.flops_per_token() == 2 * (64 * 12 + 8 * 144)


@pytest.mark.parametrize("kind,hparams", [("low_rank", {"rank": 3}), ("btt", {"rank": 2}),
                                          ("monarch", {"blocks": 4}), ("kronecker", {}),
                                          ("kronecker", {"factors": 3}),
                                          ("kronecker", {"factors": 4})])
def test_projection_recovers_a_member_of_the_family(kind, hparams):
  member = structured.make(kind, 64, 144, rngs=nnx.Rngs(3), **hparams)
  w = member.to_dense()
  projected = structured.family(kind).project(w, **hparams)
  err = jnp.linalg.norm(projected.to_dense() - w) / jnp.linalg.norm(w)
  assert err < 1e-4


@pytest.mark.parametrize("kind,hparams", [("low_rank", {"rank": 3}), ("btt", {"rank": 2}),
                                          ("monarch", {"blocks": 4}), ("kronecker", {})])
def test_flops_agree_with_xla(kind, hparams):
  layer = structured.make(kind, 256, 576, rngs=nnx.Rngs(0), **hparams)
  x = jnp.ones((128, 256))
  cost = jax.jit(lambda v: layer(v)).lower(x).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  assert xla == pytest.approx(128 * layer.flops_per_token(), rel=0.05)


def test_kronecker_projection_with_three_factors_is_a_stationary_point():
  """Nearest A (x) B (x) C: zero gradient of the squared error in every factor, and no worse
  than its sequential-SVD start."""
  w = jax.random.normal(jax.random.key(0), (64, 144))
  kron = structured.family("kronecker")
  layer = kron.project(w, factors=3)

  def sq_error(factors):
    return jnp.sum((jnp.kron(jnp.kron(*factors[:2]), factors[2]) - w) ** 2)

  factors = [layer.f0[...], layer.f1[...], layer.f2[...]]
  for f, g in zip(factors, jax.grad(sq_error)(factors)):
    assert float(jnp.linalg.norm(g)) < 1e-3 * float(jnp.linalg.norm(w)) * float(jnp.linalg.norm(f))
  start = kron.project(w, factors=3, steps=0)
  assert sq_error(factors) <= sq_error([start.f0[...], start.f1[...], start.f2[...]]) + 1e-3


def test_low_rank_projection_is_the_eckart_young_optimum():
  w = jax.random.normal(jax.random.key(0), (64, 96))
  projected = structured.family("low_rank").project(w, rank=5)
  s = jnp.linalg.svd(w, compute_uv=False)
  err = jnp.linalg.norm(projected.to_dense() - w)
  assert float(err) == pytest.approx(float(jnp.sqrt(jnp.sum(s[5:] ** 2))), rel=1e-4)


def test_bad_inputs_are_clear_errors():
  rngs = nnx.Rngs(0)
  with pytest.raises(StructureError, match="unknown structure kind 'foo'.*valid kinds"):
    structured.make("foo", 8, 8, rngs=rngs)
  with pytest.raises(StructureError, match=r"rank=99 must be in \[1, min\(d_in, d_out\)=8\]"):
    structured.make("low_rank", 8, 16, rngs=rngs, rank=99)
  with pytest.raises(StructureError, match="cannot be split into 2 factors.*nearest valid widths"):
    structured.make("btt", 67, 64, rngs=rngs)
  with pytest.raises(StructureError, match="no hyperparameter"):
    structured.make("btt", 64, 64, rngs=rngs, rnak=2)
  with pytest.raises(StructureError, match="impl='cuda' is unknown"):
    structured.make("btt", 64, 64, rngs=rngs, impl="cuda")
  with pytest.raises(StructureError, match="monarch with blocks=3 .*nearest valid widths"):
    structured.make("monarch", 64, 64, rngs=rngs, blocks=3)


@pytest.mark.parametrize("kind,hparams", [("btt", {"rank": 2}), ("monarch", {"blocks": 4})])
def test_pallas_impl_matches_xla(kind, hparams):
  xla = structured.make(kind, 64, 144, rngs=nnx.Rngs(0), **hparams)
  fast = structured.make(kind, 64, 144, rngs=nnx.Rngs(0), impl="pallas", **hparams)
  x = jax.random.normal(jax.random.key(1), (4, 64))
  backend.warn_fallback.cache_clear()
  with pytest.warns(UserWarning, match="using the pure-jnp reference"):   # CPU: no kernel body
    y = fast(x)
  np.testing.assert_allclose(y, xla(x), rtol=1e-5, atol=1e-5)
