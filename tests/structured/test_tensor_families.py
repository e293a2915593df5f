"""block_diag, tt and c-core btt: dense equivalence, closed forms, XLA FLOPs, projections, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from structured import StructureError, tt

# Each distinct core shape costs one XLA compile of the random init (seconds on a busy CPU),
# so the tests reuse few shapes: the first three configs at every shape, the last at 64 -> 144.
CONFIGS = [("block_diag", {"blocks": 4}), ("tt", {"cores": 3, "rank": 2}),
           ("btt", {"cores": 3, "rank": 2}), ("tt", {"cores": 2, "rank": 3})]
SHAPES = [(64, 64), (64, 144), (144, 64)]   # 64 = 4*4*4 = 8*8, 144 = 4*6*6 = 12*12
IDS = [f"{kind}-{'-'.join(map(str, hp.values()))}" for kind, hp in CONFIGS]


def make(kind, hparams, d_in, d_out, seed=0):
  return structured.make(kind, d_in, d_out, rngs=nnx.Rngs(seed), **hparams)


def abstract(kind, hparams, d_in, d_out):
  """The layer's shapes without drawing its cores (counts need no values)."""
  return nnx.eval_shape(lambda: make(kind, hparams, d_in, d_out))


def normal(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def rel_err(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("kind,hparams", CONFIGS, ids=IDS)
def test_layer_applies_its_dense_matrix(kind, hparams):
  for d_in, d_out in SHAPES if (kind, hparams) in CONFIGS[:3] else SHAPES[1:2]:
    layer = make(kind, hparams, d_in, d_out)
    x = normal((2, 3, d_in))
    y, want = layer(x), x @ layer.to_dense()
    assert y.shape == (2, 3, d_out) and y.dtype == jnp.float32
    assert rel_err(y, want) < 1e-5, (d_in, d_out)


def test_closed_forms():
  """Parameter and FLOP counts, core layouts and muP fans, written out for 64 -> 144."""
  bd = abstract("block_diag", {"blocks": 4}, 64, 144)
  assert bd.num_params() == 64 * 144 // 4 == bd.flops_per_token() // 2
  assert bd.w.shape == (4, 16, 36) and (bd.cores()[0].fan_in, bd.cores()[0].fan_out) == (16, 36)
  # tt, a = 4x4x4, b = 4x6x6, ranks (1, 2, 2, 1): params sum r a b r', FLOPs 2 sum r r' b_<=k a_>=k
  tt = abstract("tt", {"cores": 3, "rank": 2}, 64, 144)
  assert tt.num_params() == 4 * 4 * 2 + 2 * 4 * 6 * 2 + 2 * 4 * 6
  assert tt.flops_per_token() == 2 * (2 * 4 * 64 + 4 * 24 * 16 + 2 * 144 * 4)
  assert [getattr(tt, f"g{k}").shape for k in range(3)] == [(1, 4, 4, 2), (2, 4, 6, 2),
                                                            (2, 4, 6, 1)]
  assert [(c.fan_in, c.fan_out) for c in tt.cores()] == [(4, 8), (8, 12), (8, 6)]
  # btt, m = 4x4x4, n = 4x6x6: params = FLOPs/2 = sum r_k r_k+1 n_0..n_k m_k..m_2
  btt = abstract("btt", {"cores": 3, "rank": 2}, 64, 144)
  assert btt.num_params() == 2 * 4 * 64 + 4 * 24 * 16 + 2 * 144 * 4 == btt.flops_per_token() // 2
  assert [getattr(btt, f"w{k}").shape for k in range(3)] == [(4, 4, 4, 2, 4), (4, 4, 4, 2, 2, 6),
                                                              (4, 6, 4, 2, 6)]
  assert [(c.fan_in, c.fan_out) for c in btt.cores()] == [(4, 8), (8, 12), (8, 6)]
  # c = 2 keeps the 2-core layout the Pallas kernel reads: w0 [m2, m1, r, n1], w1 [n1, m2, r, n2]
  btt2 = abstract("btt", {"rank": 2}, 64, 144)
  assert (btt2.w0.shape, btt2.w1.shape) == ((8, 8, 2, 12), (12, 8, 2, 12))
  assert set(nnx.state(btt2, nnx.Param)) == {"w0", "w1"}


@pytest.mark.parametrize("kind,hparams", CONFIGS, ids=IDS)
def test_flops_agree_with_xla(kind, hparams):
  layer = make(kind, hparams, 64, 144)
  x = jnp.ones((128, 64))
  cost = jax.jit(lambda v: layer(v)).lower(x).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  assert xla == pytest.approx(128 * layer.flops_per_token(), rel=0.05)


@pytest.mark.parametrize("d_in,d_out,mirrored", [(1024, 4096, True), (4096, 1024, False),
                                                 (144, 64, True), (64, 144, False)])
def test_tt_runs_and_counts_its_cheaper_order(d_in, d_out, mirrored):
  """G_c first where it costs fewer FLOPs (the CIFAR MLP's w = 1024 up projection: 4 x 16 x 16 ->
  16 x 16 x 16, 851,968 -> 262,144 a token), G_1 first otherwise; XLA executes what is counted
  and the map is still x @ to_dense()."""
  layer = make("tt", {"cores": 3, "rank": 2}, d_in, d_out)
  first = tt.chain_flops(layer._chain_shapes())
  assert layer._runs_mirrored() == mirrored
  assert layer.flops_per_token() == (layer._mirrored_flops() if mirrored else first)
  if (d_in, d_out) == (1024, 4096):
    assert (first, layer.flops_per_token()) == (851_968, 262_144)
  x = jax.random.normal(jax.random.key(1), (16, d_in))
  cost = jax.jit(lambda v: layer(v)).lower(x).compile().cost_analysis()
  assert (cost[0] if isinstance(cost, list) else cost)["flops"] == pytest.approx(
      16 * layer.flops_per_token(), rel=0.01)
  w = layer.to_dense()
  np.testing.assert_allclose(layer(x), x @ w, rtol=1e-4, atol=1e-4 * float(jnp.abs(x @ w).max()))


@pytest.mark.parametrize("kind,hparams", CONFIGS, ids=IDS)
def test_projection_recovers_a_member(kind, hparams):
  w = make(kind, hparams, 64, 144, seed=3).to_dense()
  projected = structured.family(kind).project(w, **hparams)
  assert rel_err(projected.to_dense(), w) < 1e-4


def test_block_diag_projection_keeps_the_diagonal_blocks():
  w = normal((64, 144))
  mask = jnp.kron(jnp.eye(4), jnp.ones((16, 36)))
  np.testing.assert_array_equal(structured.family("block_diag").project(w, blocks=4).to_dense(),
                                w * mask)


def test_tt_svd_is_quasi_optimal():
  """Truncated TT-SVD of a random matrix: within Oseledets' bound and better than random members."""
  w = normal((64, 144))
  projected = structured.family("tt").project(w, cores=3, rank=2)
  err = float(jnp.linalg.norm(projected.to_dense() - w))
  # the k-th unfolding W[(a_<=k b_<=k), (a_>k b_>k)] of any rank-2 TT has rank <= 2, so its
  # tail singular values bound every member's error from below; TT-SVD's squared error is
  # at most their sum (Oseledets 2011, Thm 2.2)
  t = w.reshape(4, 4, 4, 4, 6, 6).transpose(0, 3, 1, 4, 2, 5)
  tails = [float(jnp.linalg.norm(jnp.linalg.svd(t.reshape(rows, -1), compute_uv=False)[2:]))
           for rows in (16, 16 * 24)]
  assert max(tails) <= err * (1 + 1e-5) and err**2 <= sum(e**2 for e in tails) * (1 + 1e-5)
  for seed in range(3):
    r = make("tt", {"cores": 3, "rank": 2}, 64, 144, seed=seed).to_dense()
    scaled = jnp.vdot(w, r) / jnp.vdot(r, r) * r
    assert err < float(jnp.linalg.norm(scaled - w))


@pytest.mark.parametrize("kind,hparams", CONFIGS, ids=IDS)
def test_bf16_input(kind, hparams):
  layer = make(kind, hparams, 64, 144)
  x = normal((4, 64))
  y16 = layer(x.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16
  assert rel_err(y16.astype(jnp.float32), layer(x)) < 2e-2


def test_bad_hyperparameters_are_clear_errors():
  rngs = nnx.Rngs(0)
  bad = [("block_diag", 64, 64, {"blocks": 0}, r"blocks=0 must be an integer >= 1"),
         ("block_diag", 64, 66, {"blocks": 4},
          r"d_out=66 divisible by 4; nearest valid widths: \[60, 64, 68, 72\]"),
         ("tt", 64, 64, {"cores": 1}, r"tt cores=1 must be an integer in \[2, 8\]"),
         ("tt", 64, 144, {"rank": 17}, r"tt rank=17 must be an integer in \[1, 16\]"),
         ("tt", 64, 144, {"rank": 0}, r"tt rank=0 must be an integer in \[1, 16\]"),
         ("tt", 67, 64, {}, r"width 67 cannot be split into 3 factors.*nearest valid widths"),
         ("btt", 64, 64, {"cores": 1}, r"btt cores=1 must be an integer in \[2, 8\]"),
         ("btt", 64, 144, {"cores": 3, "rank": 5}, r"btt rank=5 must be an integer in \[1, 4\]"),
         ("btt", 64, 144, {"cores": 3, "impl": "pallas"}, r"impl='pallas' supports cores=2 only")]
  for kind, d_in, d_out, hparams, message in bad:
    with pytest.raises(StructureError, match=message):
      structured.make(kind, d_in, d_out, rngs=rngs, **hparams)
