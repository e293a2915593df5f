"""block_sparse's mask moves at fixed K (its coordinates are state): the contraction with traced
coordinates, SET and RigL against the same update on a ``sparse`` block-mask layer, and the
methods that cannot keep K blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import structured
from experiments import sparsity
from experiments.errors import ConfigError
from experiments.sparsity import accounting
from experiments.train import checkpoint
from structured import masked
from tests.sparsity.test_methods import Two, _config

B = 4   # block side: Two's 16x32 and 32x8 layers have 4x8 and 8x2 block grids


def _dense_ref(blocks, coords, d_in, d_out):
  w = np.zeros((d_in, d_out), np.float32)
  for (r, c), blk in zip(np.asarray(coords), np.asarray(blocks)):
    w[r * B:(r + 1) * B, c * B:(c + 1) * B] = blk
  return w


def test_traced_coordinates_contract_like_the_dense_matrix():
  layer = structured.make("block_sparse", 16, 32, rngs=nnx.Rngs(0), block=B, density=0.25)
  layer.coords[...] = jnp.asarray([[3, 0], [0, 7], [1, 2], [3, 5], [0, 0], [2, 2], [1, 6], [2, 1]],
                                  jnp.int32)   # unsorted, as after a move
  np.testing.assert_array_equal(layer.to_dense(),
                                _dense_ref(layer.blocks[...], layer.coords[...], 16, 32))
  x = jax.random.normal(jax.random.key(0), (5, 16))
  loss = nnx.jit(lambda l: jnp.sum(jnp.sin(l(x))))
  want = lambda w: jnp.sum(jnp.sin(x @ w))
  np.testing.assert_allclose(loss(layer), want(layer.to_dense()), rtol=1e-6)
  g_blocks = nnx.jit(nnx.grad(lambda l: jnp.sum(jnp.sin(l(x)))))(layer)["blocks"][...]
  g_dense = jax.grad(want)(layer.to_dense())
  rows, cols = layer.coords[...][:, 0], layer.coords[...][:, 1]
  np.testing.assert_allclose(g_blocks, masked.gather(g_dense, rows, cols, B), rtol=1e-5, atol=1e-6)


def test_to_slots_keeps_surviving_blocks_in_place_and_fills_freed_slots_at_zero():
  coords = jnp.asarray([[0, 0], [0, 1], [1, 1]], jnp.int32)
  w = jnp.arange(1.0, 17.0).reshape(4, 4)   # 2x2 blocks of side 2
  mask = jnp.asarray([[True, False], [True, True]])   # (0, 1) dropped, (1, 0) grown
  w = jnp.where(masked.expand(mask, 2), w, 0.0).at[2:, :2].set(0.0)   # grown blocks are 0
  blocks, new, changed = masked.to_slots(w, mask, coords, 2)
  assert np.asarray(new).tolist() == [[0, 0], [1, 0], [1, 1]]
  assert np.asarray(changed[:, 0, 0]).tolist() == [False, True, False]
  np.testing.assert_array_equal(blocks[0], [[1, 2], [5, 6]])
  np.testing.assert_array_equal(blocks[1], 0)
  np.testing.assert_array_equal(blocks[2], [[11, 12], [15, 16]])


@nnx.jit(static_argnames="plan")
def _step(model, optimizer, x, plan):
  loss = lambda m: jnp.mean((m(x) - 1.0) ** 2)
  grads = nnx.grad(loss)(model)
  sparsity.update(model, optimizer, grads, plan,
                  nnx.grad(loss, argnums=nnx.DiffState(0, masked.GradProbe)))


def _models(method="set"):
  """A block_sparse model and a ``sparse`` block model set to the same masks and weights."""
  config = _config(method, steps=8, delta_t=1)   # updates every step: the first at step 1
  bs, sp = Two("block_sparse", block=B), Two("sparse", block=B)
  plan_bs, plan_sp = sparsity.prepare(config, bs), sparsity.prepare(config, sp)
  for a, b in ((bs.a, sp.a), (bs.b, sp.b)):
    b.mask[...], b.w[...] = a.live_mask(), a.to_dense()
  opt = lambda m: nnx.Optimizer(m, optax.adam(0.0), wrt=nnx.Param)   # lr 0: weights hold still
  return (bs, opt(bs), plan_bs), (sp, opt(sp), plan_sp)


def test_set_on_block_sparse_drops_the_smallest_blocks_and_matches_sparse_blocks():
  (bs, bs_opt, plan), (sp, sp_opt, sp_plan) = _models()
  x = jax.random.normal(jax.random.key(0), (8, 16))
  before = [(np.asarray(l.coords[...]), np.asarray(l.blocks[...])) for l in (bs.a, bs.b)]
  _step(bs, bs_opt, x, plan)
  _step(sp, sp_opt, x, sp_plan)
  for (coords, blocks), layer, lp, other in zip(before, (bs.a, bs.b), plan.layers, (sp.a, sp.b)):
    n, new = lp.counts[0], np.asarray(layer.coords[...])
    assert n > 0 and layer.n_kept == lp.kept == len(new) == len(set(map(tuple, new.tolist())))
    kept = (new == coords).all(axis=1)   # surviving slots stay in place
    norms = (blocks**2).sum(axis=(1, 2))
    assert sorted(np.flatnonzero(~kept)) == sorted(np.argsort(norms, kind="stable")[:n])
    assert not np.asarray(layer.blocks[...])[~kept].any()   # regrown blocks start at 0
    mu = np.asarray(bs_opt.opt_state[0].mu[lp.path[0]]["blocks"][...])
    assert not mu[~kept].any() and mu[kept].any()   # their moments too, the others kept
    # the same SET update (same key, same scores) on the sparse block layer: the same matrix
    np.testing.assert_array_equal(layer.live_mask(), other.mask[...])
    np.testing.assert_array_equal(layer.to_dense(), other.w[...])
    sp_mu = sp_opt.opt_state[0].mu[lp.path[0]]["w"][...]
    np.testing.assert_allclose(masked.to_dense(mu, new[:, 0], new[:, 1], *sp_mu.shape), sp_mu,
                               rtol=1e-5, atol=1e-9)


def test_static_draws_the_planned_density_and_never_moves():
  model = Two("block_sparse", block=B, density=0.5)
  plan = sparsity.prepare(_config("static", density=0.25), model)
  assert [l.n_kept for l in (model.a, model.b)] == [lp.kept for lp in plan.layers] == [8, 4]
  assert model.a.blocks[...].shape == (8, B, B) and model.a.density == 0.25
  coords = np.asarray(model.a.coords[...])
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  for _ in range(3):
    _step(model, optimizer, jnp.ones((8, 16)), plan)
  np.testing.assert_array_equal(model.a.coords[...], coords)


def test_rigl_on_block_sparse_regrows_where_the_dense_gradient_is_largest():
  (bs, bs_opt, plan), (sp, sp_opt, sp_plan) = _models("rigl")
  x = jax.random.normal(jax.random.key(0), (8, 16))
  before = [(np.asarray(l.coords[...]), np.asarray(l.blocks[...])) for l in (bs.a, bs.b)]
  dense = [l.to_dense() for l in (bs.a, bs.b)]
  g_a, g_b = jax.grad(lambda a, b: jnp.mean((jax.nn.gelu(x @ a) @ b - 1.0) ** 2),
                      argnums=(0, 1))(*dense)   # the dense gradient, by hand
  _step(bs, bs_opt, x, plan)
  _step(sp, sp_opt, x, sp_plan)
  for (coords, blocks), layer, lp, g, other in zip(before, (bs.a, bs.b), plan.layers, (g_a, g_b),
                                                  (sp.a, sp.b)):
    n, new = lp.counts[0], np.asarray(layer.coords[...])
    assert n > 0 and len(set(map(tuple, new.tolist()))) == lp.kept   # K distinct blocks
    kept = (new == coords).all(axis=1)
    norms = (blocks**2).sum(axis=(1, 2))
    assert sorted(np.flatnonzero(~kept)) == sorted(np.argsort(norms, kind="stable")[:n])
    scores = masked.block_norms(g, B)
    scores[tuple(coords.T)] = -np.inf   # only blocks not kept before may grow
    grown = set(map(tuple, new[~kept].tolist()))
    top = np.argsort(-scores, axis=None, kind="stable")[:n]
    assert grown == set(zip(*np.unravel_index(top, scores.shape)))
    assert not np.asarray(layer.blocks[...])[~kept].any()   # regrown blocks start at 0
    np.testing.assert_array_equal(layer.live_mask(), other.mask[...])   # = RigL on 'sparse'
    np.testing.assert_array_equal(layer.to_dense(), other.w[...])
    np.testing.assert_array_equal(layer.grad_probe[...], 0.0)   # never trained


def test_the_grad_probe_adds_no_dense_product_to_a_step_that_does_not_read_it():
  x = jax.random.normal(jax.random.key(0), (64, 16))
  loss = lambda m: jnp.sum(jnp.sin(m(x)))
  dots = lambda m: nnx.jit(nnx.grad(loss)).lower(m).compile().as_text().count(" dot(")
  model = Two("block_sparse", block=B)
  without = dots(model)
  sparsity.prepare(_config("rigl"), model)
  assert model.a.grad_probe is not None and dots(model) == without
  g = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, masked.GradProbe)))(model)
  want = jax.grad(lambda a: jnp.sum(jnp.sin(model.b(jax.nn.gelu(x @ a)))))(model.a.to_dense())
  np.testing.assert_allclose(g["a"]["grad_probe"][...], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gmp", "spdf"])
def test_methods_that_cannot_keep_k_blocks_name_kind_sparse(method):
  with pytest.raises(ConfigError, match=rf"use kind='sparse', block={B} for '{method}'"):
    sparsity.prepare(_config(method), Two("block_sparse", block=B))


def test_pallas_block_sparse_cannot_move():
  with pytest.raises(ConfigError, match="takes static block coordinates; use impl='xla'"):
    sparsity.prepare(_config("set"), Two("block_sparse", block=B, impl="pallas"))


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_a_run_resumed_mid_schedule_from_a_checkpoint_ends_bitwise_equal(tmp_path, method):
  config, x = _config(method, steps=6, delta_t=2), jax.random.normal(jax.random.key(0), (8, 16))

  def build():
    model = Two("block_sparse", block=B)
    plan = sparsity.prepare(config, model)
    return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param), plan

  straight, straight_opt, plan = build()
  start = np.asarray(straight.a.coords[...])
  for _ in range(6):
    _step(straight, straight_opt, x, plan)
  assert not (np.asarray(straight.a.coords[...]) == start).all()   # the mask moved
  first, first_opt, _ = build()
  for _ in range(3):   # updates at steps 2 and 4 (end_frac 0.75): stopped between them
    _step(first, first_opt, x, plan)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(3, first, first_opt, {})
  resumed, resumed_opt, _ = build()
  assert ckpt.restore_latest(resumed, resumed_opt)["step"] == 3
  for _ in range(3):
    _step(resumed, resumed_opt, x, plan)
  for a, b in zip(jax.tree.leaves(nnx.state((straight, straight_opt))),
                  jax.tree.leaves(nnx.state((resumed, resumed_opt))), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_ideal_flops_of_block_sparse_are_its_executed_ones_plus_rigl_dense_gradients(method):
  model = Two("block_sparse", block=B)
  plan = sparsity.prepare(_config(method), model)
  forward = model.a.flops_per_token() + model.b.flops_per_token()   # one token each
  costs = accounting.Accounting(plan, 0, 0, forward, (1, 1), 1)
  assert forward == 2 * (16 * 32 + 32 * 8)   # blocks of 4 run as dense products (masked.matmul)
  assert [costs.ideal_flops_per_example(t) for t in (1, 6)] == [3 * forward] * 2   # no update
  # RigL's update steps (5, 10, ...) also read the dense gradient of the masked-out blocks
  dense_gradient = 2 * ((32 - 8) + (16 - 4)) * B * B if method == "rigl" else 0
  assert 5 in plan.update_steps()
  assert costs.ideal_flops_per_example(5) == 3 * forward + dense_gradient


def test_a_checkpoint_written_before_coords_restores_with_the_seed_drawn_ones(tmp_path):
  model = Two("block_sparse", block=B)
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  model.a.blocks[...] = model.a.blocks[...] + 1.0
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.manager.save(1, args=ocp.args.Composite(   # the layout of the code before masked.Coords
      model=ocp.args.StandardSave(nnx.state(model, nnx.Not(masked.Coords))),
      optimizer=ocp.args.StandardSave(nnx.state(optimizer)), meta=ocp.args.JsonSave({"step": 1})))
  ckpt.manager.wait_until_finished()
  fresh = Two("block_sparse", block=B)
  assert ckpt.restore_latest(fresh, nnx.Optimizer(fresh, optax.adam(1e-2), wrt=nnx.Param)) == {
      "step": 1}
  for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(fresh))):
    np.testing.assert_array_equal(a, b)
