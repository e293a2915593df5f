"""Every registered family honours the contract: dense equivalence, parameter count, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from structured import StructureError

SHAPES = [(64, 64), (64, 144), (144, 64)]
HPARAMS = {"low_rank": {"rank": 3}, "btt": {"rank": 2}}


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
  assert layer.num_params() == sum(leaf.size for leaf in leaves)


def test_closed_forms():
  rngs = nnx.Rngs(0)
  btt = structured.make("btt", 64, 144, rngs=rngs, rank=2)   # 64 = 8*8, 144 = 12*12
  assert btt.num_params() == 2 * (64 * 12 + 144 * 8) == btt.flops_per_token() // 2
  low = structured.make("low_rank", 64, 144, rngs=rngs, rank=3)
  assert low.num_params() == 3 * (64 + 144) == low.flops_per_token() // 2


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
