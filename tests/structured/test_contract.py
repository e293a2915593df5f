"""Every registered family honours the contract: dense equivalence, parameter count, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from pallas_kernels import backend
from structured import StructureError
from structured.low_rank import svd_split
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


@pytest.mark.parametrize("kind", sorted(structured.FAMILIES))
def test_projection_of_the_zero_matrix_is_the_zero_member(kind):
  """Zero is a member of every family; kronecker and blast once divided by its zero norm."""
  layer = structured.family(kind).project(jnp.zeros((64, 144)), **HPARAMS.get(kind, {}))
  for leaf in jax.tree.leaves(nnx.state(layer, nnx.Param)):
    assert jnp.all(jnp.isfinite(leaf))
  assert not jnp.any(layer.to_dense())


def test_kronecker_projection_of_zero_with_three_factors_is_finite():
  layer = structured.family("kronecker").project(jnp.zeros((64, 144)), factors=3, steps=2)
  assert all(jnp.all(getattr(layer, f"f{k}")[...] == 0) for k in range(3))


def test_monarch_is_block_diagonal_permutation_block_diagonal():
  """The module docstring's W = R P L: R, L block-diagonal with b blocks, P a permutation."""
  layer = structured.make("monarch", 64, 144, rngs=nnx.Rngs(0), blocks=4)
  (m1, m2), (n1, n2), r = layer.ms, layer.ns, layer.rank
  w0, w1 = np.asarray(layer.w0[...]), np.asarray(layer.w1[...])   # [m2, m1, r, n1], [n1, m2, r, n2]
  block_diag = jax.scipy.linalg.block_diag
  right = block_diag(*(w0[j].reshape(m1, r * n1) for j in range(m2)))   # features (m2, r, n1)
  left = block_diag(*(w1[i].reshape(m2 * r, n2) for i in range(n1)))    # features (n1, m2, r)
  order = np.arange(m2 * r * n1).reshape(m2, r, n1).transpose(2, 0, 1).reshape(-1)
  perm = np.eye(m2 * r * n1)[:, order]
  np.testing.assert_allclose(right @ perm @ left, layer.to_dense(), atol=1e-6)


@pytest.mark.parametrize("d_in,d_out,a_2_first", [(32, 144, True), (144, 32, False)])
def test_kronecker_flops_follow_the_cheaper_contraction_order(d_in, d_out, a_2_first):
  """A_1 first costs 2 (b_1 d_in + a_2 d_out), A_2 first 2 (b_2 d_in + a_1 d_out); the layer runs
  and counts the cheaper (unequal factors: 32 = 4 x 8), and XLA executes what it counts."""
  layer = structured.make("kronecker", d_in, d_out, rngs=nnx.Rngs(0))
  (a1, a2), (b1, b2) = layer.a, layer.b
  assert sorted((a1, a2, b1, b2)) == [4, 8, 12, 12]
  first, mirrored = 2 * (b1 * d_in + a2 * d_out), 2 * (b2 * d_in + a1 * d_out)
  assert (mirrored < first) == a_2_first
  assert layer.flops_per_token() == min(first, mirrored)
  cost = jax.jit(lambda v: layer(v)).lower(jnp.ones((128, d_in))).compile().cost_analysis()
  assert (cost[0] if isinstance(cost, list) else cost)["flops"] == 128 * layer.flops_per_token()
  x = jax.random.normal(jax.random.key(1), (128, d_in))
  np.testing.assert_allclose(layer(x), x @ layer.to_dense(), rtol=1e-5, atol=1e-5)


def test_svd_split_is_the_balanced_eckart_young_pair():
  """(U sqrt(s), sqrt(s) V^T), batched: the best rank-r product, both factors the same norm."""
  w = jax.random.normal(jax.random.key(0), (3, 12, 20))
  left, right = svd_split(w, 4)
  assert left.shape == (3, 12, 4) and right.shape == (3, 4, 20)
  s = jnp.linalg.svd(w, compute_uv=False)
  err = jnp.linalg.norm(left @ right - w, axis=(1, 2))
  np.testing.assert_allclose(err, jnp.sqrt(jnp.sum(s[:, 4:] ** 2, axis=1)), rtol=1e-4)
  np.testing.assert_allclose(jnp.linalg.norm(left, axis=1), jnp.linalg.norm(right, axis=2),
                             rtol=1e-4)


def test_bad_inputs_are_clear_errors():
  rngs = nnx.Rngs(0)
  with pytest.raises(StructureError, match="unknown structure kind 'foo'.*valid kinds"):
    structured.make("foo", 8, 8, rngs=rngs)
  with pytest.raises(StructureError,
                     match=r"rank=99 must be an integer in \[1, min\(d_in, d_out\)=8\]"):
    structured.make("low_rank", 8, 16, rngs=rngs, rank=99)
  with pytest.raises(StructureError, match="cannot be split into 2 factors.*nearest valid widths"):
    structured.make("btt", 67, 64, rngs=rngs)
  with pytest.raises(StructureError, match="no hyperparameter"):
    structured.make("btt", 64, 64, rngs=rngs, rnak=2)
  with pytest.raises(StructureError, match="impl='cuda' is unknown"):
    structured.make("btt", 64, 64, rngs=rngs, impl="cuda")
  with pytest.raises(StructureError, match="monarch with blocks=3 .*nearest valid widths"):
    structured.make("monarch", 64, 64, rngs=rngs, blocks=3)


@pytest.mark.parametrize("kind,hparams,message", [
    ("btt", {"rank": 1.5}, r"btt rank=1.5 must be an integer in \[1, 8\]"),
    ("tt", {"rank": 1.5}, r"tt rank=1.5 must be an integer in \[1, 16\]"),
    ("pixelfly", {"rank": 1.5}, r"pixelfly rank=1.5 must be an integer in \[1, "),
    ("low_rank", {"rank": 1.5}, r"low_rank rank=1.5 must be an integer in \[1, "),
    ("low_rank", {"rank": True}, r"low_rank rank=True must be an integer"),
    ("block_diag", {"blocks": 2.0}, r"block_diag blocks=2.0 must be an integer >= 1"),
    ("monarch", {"blocks": 2.0}, r"monarch blocks=2.0 must be an integer >= 1"),
    ("kronecker", {"factors": 2.5}, r"kronecker factors=2.5 must be an integer in \[2, 8\]"),
    ("block_sparse", {"block": 8.0}, r"block_sparse block=8.0 must be an integer >= 1"),
    ("nm_sparse", {"n": 2.0}, r"nm_sparse n=2.0 must be an integer in \[1, m=4\]"),
])
def test_non_integer_hyperparameters_are_one_clear_error(kind, hparams, message):
  """No rounding and no AttributeError from deep inside the init: the family names the key."""
  with pytest.raises(StructureError, match=message):
    structured.make(kind, 64, 64, rngs=nnx.Rngs(0), **hparams)


@pytest.mark.parametrize("kind,hparams", [("btt", {"rank": 2}), ("monarch", {"blocks": 4})])
def test_pallas_impl_matches_xla(kind, hparams):
  xla = structured.make(kind, 64, 144, rngs=nnx.Rngs(0), **hparams)
  fast = structured.make(kind, 64, 144, rngs=nnx.Rngs(0), impl="pallas", **hparams)
  x = jax.random.normal(jax.random.key(1), (4, 64))
  backend.warn_fallback.cache_clear()
  with pytest.warns(UserWarning, match="using the pure-jnp reference"):   # CPU: no kernel body
    y = fast(x)
  np.testing.assert_allclose(y, xla(x), rtol=1e-5, atol=1e-5)
