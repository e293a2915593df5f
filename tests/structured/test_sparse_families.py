"""The masked sparse families: block_sparse, nm_sparse, pixelfly.

Layers are built once per (kind, shape) and checks run jitted: eager construction and op-by-op
dispatch dominate the cost of these small tests.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from pallas_kernels import backend
from structured import StructureError, masked
from structured.masked import Mask
from structured.pixelfly import block_layout, butterfly_mask, tile_plan

HPARAMS = {"block_sparse": {"block": 8, "density": 0.5, "seed": 1}, "nm_sparse": {"n": 1, "m": 4},
           "pixelfly": {"butterfly_size": 16, "n_factors": 3, "block": 4, "rank": 2}}
KINDS = sorted(HPARAMS)
SHAPES = [(32, 32), (32, 96), (96, 32)]


def rel_err(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@functools.cache
def built(kind, d_in, d_out):
  """A layer with the test hyperparameters (shared: tests must not modify it)."""
  return structured.make(kind, d_in, d_out, rngs=nnx.Rngs(0), **HPARAMS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_layer_applies_its_dense_matrix(kind):
  for (d_in, d_out), lead in zip(SHAPES, [(5,), (2, 3), (2, 1, 3)]):
    layer = built(kind, d_in, d_out)
    x = jax.random.normal(jax.random.key(1), (*lead, d_in))
    y, want = jax.jit(lambda v: (layer(v), v @ layer.to_dense()))(x)
    assert y.shape == (*lead, d_out)
    assert rel_err(y, want) < 1e-5


def test_block_sparse_keeps_exactly_its_blocks():
  layer = built("block_sparse", 32, 96)   # block 8, density 0.5, seed 1
  grid = np.asarray(layer.to_dense()).reshape(4, 8, 12, 8).transpose(0, 2, 1, 3)
  nonzero = np.abs(grid).sum(axis=(2, 3)) > 0
  assert nonzero.sum() == layer.n_kept == 24   # 0.5 of the 4 x 12 blocks
  kept = lambda l: set(map(tuple, np.asarray(l.coords[...]).tolist()))
  assert set(zip(*np.nonzero(nonzero))) == kept(layer)
  assert (np.abs(grid[nonzero]) > 0).all()   # kept blocks are dense
  other = structured.make("block_sparse", 32, 96, rngs=nnx.Rngs(0), block=8, density=0.5, seed=0)
  assert kept(other) != kept(layer)   # seed -> mask


def test_nm_sparse_keeps_n_of_every_m_along_d_in_and_trains_only_those():
  layer = built("nm_sparse", 96, 32)   # 1:4
  groups = np.asarray(layer.to_dense()).reshape(24, 4, 32)
  assert ((groups != 0).sum(axis=1) == 1).all()
  assert isinstance(layer.mask, Mask) and not isinstance(layer.mask, nnx.Param)
  x = jax.random.normal(jax.random.key(1), (4, 96))
  grads = nnx.jit(nnx.grad(lambda model: jnp.sum(model(x) ** 2)))(layer)
  assert not np.asarray(grads["w"][...])[~np.asarray(layer.mask[...])].any()
  assert "mask" not in grads


def test_butterfly_mask_is_the_union_of_butterfly_factors():
  # factor k (stride 2^k) links i and j when they differ in bit k only; factors 0, 1 of size 4:
  want = np.array([[1, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]], bool)
  np.testing.assert_array_equal(butterfly_mask(4, 2), want)
  assert (butterfly_mask(16, 2).sum(axis=1) == 3).all()   # (n_factors + 1) per row


@pytest.mark.parametrize("d_in,d_out", SHAPES[:2])
def test_pixelfly_sparse_part_is_the_stretched_block_butterfly(d_in, d_out):
  layer = built("pixelfly", d_in, d_out)   # butterfly_size 16, n_factors 3, block 4
  sparse = np.asarray(layer.to_dense() - layer.u[...] @ layer.v[...])
  # fly: repeat each butterfly entry over a (d_in/16) x (d_out/16) tile, keep blocks touching one
  full = np.repeat(np.repeat(butterfly_mask(16, 3), d_in // 16, 0), d_out // 16, 1)
  want = full.reshape(d_in // 4, 4, d_out // 4, 4).any(axis=(1, 3))
  got = (np.abs(sparse) > 1e-6).reshape(d_in // 4, 4, d_out // 4, 4).any(axis=(1, 3))
  np.testing.assert_array_equal(got, want)


def test_pixelfly_tile_path_gives_the_dense_products_and_gradients():
  # butterfly 8 on 64 x 128: tiles 8 x 16, block 4 divides both, so the tile-level matmul runs
  layer = structured.make("pixelfly", 64, 128, rngs=nnx.Rngs(0), butterfly_size=8, n_factors=2,
                          block=4, rank=2)
  assert tile_plan(64, 128, 8, 2, 4) is not None
  assert tile_plan(32, 96, 16, 3, 4) is None   # tiles 2 x 6: the block path
  graph, params = nnx.split(layer)
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)
  x = jax.random.normal(jax.random.key(1), (2, 3, 64))
  probe = jax.random.normal(jax.random.key(2), (2, 3, 128))

  def loss(params, x, apply):
    return jnp.sum(jnp.sin(apply(nnx.merge(graph, params), x)) * probe)

  tiled, dense = (lambda model, x: model(x)), (lambda model, x: x @ model.to_dense())
  got, want = jax.jit(lambda p, x: [jax.grad(loss, (0, 1))(p, x, f) for f in (tiled, dense)])(
      params, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(g, w) < 1e-5
  cost = jax.jit(lambda v: nnx.merge(graph, params)(v)).lower(jnp.ones((256, 64))).compile()
  cost = cost.cost_analysis()
  assert (cost[0] if isinstance(cost, list) else cost)["flops"] == pytest.approx(
      256 * layer.flops_per_token(), rel=0.05)


def test_closed_forms():
  rngs = nnx.Rngs(0)
  bs = structured.make("block_sparse", 64, 144, rngs=rngs, use_bias=True)   # block 16, 0.25
  assert bs.n_kept == 9 and bs.num_params() == 9 * 16 * 16 + 144
  assert bs.ideal_flops_per_token() == 2 * 9 * 256   # runs dense: see the test below
  assert [(c.fan_in, c.fan_out) for c in bs.cores()] == [(16, 36)]   # density * (d_in, d_out)
  nm = structured.make("nm_sparse", 64, 144, rngs=rngs, use_bias=True)   # 2:4
  assert nm.num_params() == 64 * 144 // 2 + 144
  stored = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(nm, nnx.Param)))
  assert nm.num_params() == stored - int((~nm.mask[...]).sum())
  assert nm.flops_per_token() == 2 * 64 * 144 == 2 * nm.ideal_flops_per_token()
  assert [(c.fan_in, c.fan_out) for c in nm.cores()] == [(32, 72)]
  pf = structured.make("pixelfly", 64, 64, rngs=rngs, block=4, rank=2)
  nnz = 3 * 64 * 64 // 16   # blocks align with butterfly entries: density (n_factors + 1) / 16
  assert pf.num_params() == nnz + 2 * 128 == pf.ideal_flops_per_token() // 2
  assert pf.flops_per_token() == 2 * (nnz + 2 * 128) + 64   # tile path: d_out adds
  for layer in (bs, pf):
    assert layer.num_params() == sum(x.size for x in jax.tree.leaves(nnx.state(layer, nnx.Param)))


@pytest.mark.parametrize("kind", KINDS)
def test_flops_agree_with_xla(kind):
  # pixelfly runs rank 2: XLA counts a rank-1 (size-1) contraction as d_out multiplies, not 2 d_out
  layer = built(kind, 32, 96)
  x = jnp.ones((256, 32))
  cost = jax.jit(lambda v: layer(v)).lower(x).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  assert xla == pytest.approx(256 * layer.flops_per_token(), rel=0.05)
  assert layer.ideal_flops_per_token() < layer.flops_per_token()


def test_small_blocks_run_as_one_dense_product_large_blocks_as_block_products():
  # the cost model K (1.6 b^2 + 2000) < d_in d_out, at density 0.25 of a 1024 x 1024 grid
  assert not masked.blocks_beat_dense(1024, 16, 1024, 1024)   # 1024 (410 + 2000) > 1024^2
  assert masked.blocks_beat_dense(256, 32, 1024, 1024)        # 256 (1638 + 2000) < 1024^2
  small, large = (structured.make("block_sparse", 256, 256, rngs=nnx.Rngs(0), block=b)
                  for b in (16, 64))
  assert small.flops_per_token() == 2 * 256 * 256 > small.ideal_flops_per_token()
  assert large.flops_per_token() == 2 * 4 * 64**2 + 4 * 64   # K = 4 blocks of 64
  for layer in (small, large):   # XLA runs what the count says
    cost = jax.jit(lambda v: layer(v)).lower(jnp.ones((128, 256))).compile().cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    assert xla == pytest.approx(128 * layer.flops_per_token(), rel=0.05)


@pytest.mark.parametrize("traced", [False, True])
def test_block_products_equal_the_dense_product_in_values_and_gradients(traced):
  # the two paths of masked.matmul, at a shape where the rule picks the dense one
  d_in, d_out, b = 32, 48, 8
  kept = np.random.default_rng(0).permutation(24) < 9
  rows, cols = masked.coords(kept.reshape(4, 6))
  ids = (jnp.asarray(rows), jnp.asarray(cols)) if traced else (rows, cols)
  blocks = jax.random.normal(jax.random.key(0), (9, b, b))
  x, acc, r = (jax.random.normal(jax.random.key(i), shape)
               for i, shape in ((1, (5, d_in)), (2, (5, d_out)), (3, (5, d_out))))

  def loss(path):
    return lambda blocks, x, acc: jnp.sum(path(x, blocks, *ids, d_out, acc) * r)

  assert not masked.blocks_beat_dense(9, b, d_in, d_out)
  (got, g_got), (want, g_want) = (jax.value_and_grad(loss(path), (0, 1, 2))(blocks, x, acc)
                                  for path in (masked.block_matmul, masked.matmul))
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  for g, w in zip(g_got, g_want):
    assert rel_err(g, w) < 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_projection_recovers_a_member_of_the_family(kind):
  w = built(kind, 32, 96).to_dense()
  hparams = {k: v for k, v in HPARAMS[kind].items() if k != "seed"}   # find the mask, not reuse it
  projected = structured.family(kind).project(w, **hparams)
  assert rel_err(projected.to_dense(), w) < 1e-4


def test_block_sparse_projection_is_optimal_by_brute_force():
  w = np.asarray(jax.random.normal(jax.random.key(0), (12, 8)))   # 3 x 2 blocks of 4, keep 3
  projected = structured.family("block_sparse").project(jnp.asarray(w), block=4, density=0.5)
  grid = w.reshape(3, 4, 2, 4).transpose(0, 2, 1, 3).reshape(6, 4, 4)
  best = min(sum(np.sum(grid[k] ** 2) for k in range(6) if k not in kept)
             for kept in itertools.combinations(range(6), 3))
  err = float(jnp.sum((projected.to_dense() - w) ** 2))
  assert err == pytest.approx(best, rel=1e-5)


def test_nm_projection_is_optimal_by_brute_force():
  w = np.asarray(jax.random.normal(jax.random.key(0), (8, 3)))   # 2 groups of 4 per column
  projected = structured.family("nm_sparse").project(jnp.asarray(w), n=2, m=4)
  best = 0.0
  for g, col in itertools.product(range(2), range(3)):
    group = w[4 * g:4 * g + 4, col]
    best += min(sum(group[i] ** 2 for i in range(4) if i not in kept)
                for kept in itertools.combinations(range(4), 2))
  err = float(jnp.sum((projected.to_dense() - w) ** 2))
  assert err == pytest.approx(best, rel=1e-5)


def test_pixelfly_projection_improves_on_masking_and_one_pass():
  w = jax.random.normal(jax.random.key(0), (32, 96))
  hp = HPARAMS["pixelfly"]
  keep = np.kron(block_layout(32, 96, 16, 3, 4), np.ones((4, 4), bool))
  one_pass, full = (rel_err(structured.family("pixelfly").project(w, steps=s, **hp).to_dense(), w)
                    for s in (1, 20))
  assert full < one_pass < rel_err(jnp.where(keep, w, 0.0), w)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_input_works(kind):
  layer = built(kind, 32, 96)
  x = jax.random.normal(jax.random.key(1), (4, 32))
  y, want = layer(x.astype(jnp.bfloat16)), layer(x)
  assert y.dtype == jnp.bfloat16
  assert rel_err(y.astype(jnp.float32), want) < 2e-2


def test_block_sparse_pallas_impl_matches_xla():
  xla = built("block_sparse", 32, 96)
  fast = structured.make("block_sparse", 32, 96, rngs=nnx.Rngs(0), impl="pallas",
                         **HPARAMS["block_sparse"])
  x = jax.random.normal(jax.random.key(1), (4, 32))
  backend.warn_fallback.cache_clear()
  with pytest.warns(UserWarning, match="using the pure-jnp reference"):   # CPU: no kernel body
    y = fast(x)
  np.testing.assert_allclose(y, xla(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,d_in,d_out,hparams,match", [
    ("block_sparse", 64, 64, {"density": 0.0}, r"density=0.0 must be in \(0, 1\]"),
    ("block_sparse", 64, 64, {"density": 1.5}, r"density=1.5 must be in \(0, 1\]"),
    ("block_sparse", 64, 144, {"block": 12},
     r"block=12 must divide .*valid blocks: \[1, 2, 4, 8, 16\]"),
    ("block_sparse", 64, 64, {"impl": "cuda"}, r"impl='cuda' is unknown"),
    ("nm_sparse", 64, 64, {"n": 5, "m": 4}, r"n=5 must be an integer in \[1, m=4\]"),
    ("nm_sparse", 66, 64, {}, r"m=4 must divide d_in=66; nearest valid d_in: \[60, 64, 68, 72\]"),
    ("pixelfly", 64, 64, {"butterfly_size": 12}, r"butterfly_size=12 must be a power of 2"),
    ("pixelfly", 64, 64, {"n_factors": 5},
     r"n_factors=5 must be an integer in \[1, log2\(butterfly_size\)=4\]"),
    ("pixelfly", 72, 64, {}, r"butterfly_size=16 must divide d_in=72; nearest valid widths"),
    ("pixelfly", 64, 64, {"block": 24}, r"block=24 must divide .*valid blocks"),
    ("pixelfly", 64, 64, {"rank": 65},
     r"rank=65 must be an integer in \[1, min\(d_in, d_out\)=64\]"),
])
def test_bad_inputs_are_clear_errors(kind, d_in, d_out, hparams, match):
  with pytest.raises(StructureError, match=match):
    structured.make(kind, d_in, d_out, rngs=nnx.Rngs(0), **hparams)
