"""Each mask-update algorithm on small layers, against hand-checkable outcomes."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

import structured
from experiments import config as run_config, sparsity
from experiments.sparsity import accounting, plan as plans, rigl, schedule, set_regrow, srste
from models import factory
from structured import masked
from structured.mup import MuP
from structured.nm_sparse import top_n_of_m

MUP = MuP("mup", base_width=16, base_depth=0, rule="adam", eps_mup=False, zero_init=True)


def _config(method, steps=40, **keys):
  """The parts of a RunConfig the sparsity package reads."""
  section = dict(method=method, density=0.25, distribution="uniform", delta_t=5, start_frac=0.0,
                 end_frac=0.75, drop_fraction=0.5, lambda_w=0.1, switch_frac=0.5)
  section.update(keys)
  return types.SimpleNamespace(steps=steps, seed=0, mup=MUP,
                               sparsity=schedule.SparsityConfig(**section))


class Two(nnx.Module):
  def __init__(self, kind="sparse", **hparams):
    self.a = structured.make(kind, 16, 32, rngs=nnx.Rngs(0), **hparams)
    self.b = structured.make(kind, 32, 8, rngs=nnx.Rngs(1), **hparams)

  def __call__(self, x):
    return self.b(jax.nn.gelu(self.a(x)))


@nnx.jit(static_argnames="plan")
def _step(model, optimizer, x, plan):
  grads = nnx.grad(lambda m: jnp.mean((m(x) - 1.0) ** 2))(model)
  sparsity.update(model, optimizer, grads, plan)
  return grads


def _run(method, steps=40, lr=1e-2, kind="sparse", hparams=None, **keys):
  """Trains ``Two`` with ``method``; yields (step, model, optimizer, grads, plan) after each step."""
  model = Two(kind, **(hparams or {}))
  plan = sparsity.prepare(_config(method, steps, **keys), model)
  optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(0), (8, 16))
  for t in range(1, steps + 1):
    yield t, model, optimizer, _step(model, optimizer, x, plan), plan


def _masks(model):
  return [np.asarray(model.a.mask[...]), np.asarray(model.b.mask[...])]


def test_gmp_follows_the_cubic_schedule_at_every_update_step():
  steps, start, end, final = 20, 4, 16, 0.25   # start_frac 0.2, end_frac 0.8, every 4 steps
  w0 = None
  for t, model, _, _, plan in _run("gmp", steps, lr=0.0, start_frac=0.2, end_frac=0.8, delta_t=4):
    if w0 is None:
      w0 = [np.abs(np.asarray(model.a.w[...])), np.abs(np.asarray(model.b.w[...]))]
      costs = accounting.Accounting(plan, 0, 0, 0, (1,) * len(plan.layers), 1)
    assert costs.live_weights(t) == sum(m.sum() for m in _masks(model))   # host = device
    for mask, w, cells in zip(_masks(model), w0, (512, 256)):
      if t < start:
        assert mask.all()
        continue
      p = min(1.0, (min(t - t % 4, end) - start) / (end - start))
      want = round((final + (1 - final) * (1 - p) ** 3) * cells)
      assert mask.sum() == want, (t, mask.sum(), want)
      # lr 0: the weights never change, so nested magnitude pruning keeps the global top |w|
      assert np.sort(w[mask])[0] >= np.sort(w[~mask])[-1] if (~mask).any() else True
  assert list(plan.update_steps()) == [4, 8, 12, 16]


def _hand_layer():
  """A 4x4 layer: w = 1..16 with signs, mask keeps 8 entries (the even flat indices)."""
  w = jnp.asarray(np.arange(1, 17, dtype=np.float32).reshape(4, 4) * np.tile([1, -1], 8).reshape(4, 4))
  mask = jnp.asarray((np.arange(16) % 2 == 0).reshape(4, 4))
  lp = plans.LayerPlan(("l",), "w", 1, None, 16, 8, (3,))
  return jnp.where(mask, w, 0.0), mask, lp


def test_set_drops_the_k_smallest_magnitudes_and_regrows_as_many_elsewhere_at_zero():
  w, mask, lp = _hand_layer()   # kept magnitudes 1, 3, ..., 15 at flat 0, 2, ..., 14
  new_w, new_mask = set_regrow.update(w, mask, None, 0, jax.random.key(3), lp, None)
  new_w, new_mask, mask = map(np.asarray, (new_w, new_mask, mask))
  assert new_mask.sum() == mask.sum() == 8
  dropped = mask & ~new_mask
  assert sorted(np.flatnonzero(dropped)) == [0, 2, 4]   # |w| = 1, 3, 5
  grown = new_mask & ~mask
  assert grown.sum() == 3 and not (grown & mask).any()
  assert (new_w[grown] == 0).all() and (new_w[dropped] == 0).all()
  np.testing.assert_array_equal(new_w[mask & new_mask], np.asarray(w)[mask & new_mask])


def test_rigl_regrows_where_the_dense_gradient_is_largest_among_inactive_positions():
  w, mask, lp = _hand_layer()
  g = jnp.asarray(np.random.default_rng(0).permutation(16).astype(np.float32).reshape(4, 4) - 8)
  new_w, new_mask = map(np.asarray, rigl.update(w, mask, g, 0, None, lp, None))
  inactive = ~np.asarray(mask).reshape(-1)
  scores = np.where(inactive, np.abs(np.asarray(g)).reshape(-1), -1)
  want = set(np.argsort(-scores, kind="stable")[:3])
  grown = new_mask & ~np.asarray(mask)
  assert set(np.flatnonzero(grown)) == want
  assert (new_w[grown] == 0).all() and new_mask.sum() == 8
  assert sorted(np.flatnonzero(np.asarray(mask) & ~new_mask)) == [0, 2, 4]


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_set_rigl_keep_density_and_train_only_kept_weights(method):
  kept, seen_change = None, False
  for t, model, optimizer, _, plan in _run(method, 20):
    masks = _masks(model)
    if kept is None:
      kept = [m.sum() for m in masks]
      before = masks
    assert [m.sum() for m in masks] == kept == [lp.kept for lp in plan.layers]
    for mask, w in zip(masks, (model.a.w[...], model.b.w[...])):
      assert not np.asarray(w)[~mask].any()   # pruned weights stay exactly 0
    if t in plan.update_steps():
      grown = masks[0] & ~before[0]
      seen_change |= grown.any()
      # moments of regrown weights restart at 0 (only the next step's gradient enters them)
      mu = optimizer.opt_state[0].mu["a"]["w"][...]
      assert not np.asarray(mu)[grown].any()
    before = masks
  assert seen_change


def test_rigl_layers_see_the_dense_gradient_and_the_optimizer_the_masked_one():
  model = Two()
  plan = sparsity.prepare(_config("rigl"), model)
  x = jax.random.normal(jax.random.key(0), (8, 16))
  grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
  g = np.asarray(grads["a"]["w"][...])
  assert np.abs(g[~np.asarray(model.a.mask[...])]).sum() > 0   # dense: pruned entries too
  masked = rigl.grad(model.a.w[...], model.a.mask[...], grads["a"]["w"][...], plan.layers[0], None)
  np.testing.assert_array_equal(masked, np.where(model.a.mask[...], g, 0))


def test_srste_gradient_is_straight_through_plus_decay_on_pruned_weights():
  model = Two("nm_sparse", n=2, m=4)
  plan = sparsity.prepare(_config("srste", delta_t=1, end_frac=1.0), model)
  x = jax.random.normal(jax.random.key(0), (8, 16))
  grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
  w, mask = model.a.w[...], model.a.mask[...]
  # the straight-through gradient: dL/d(W ⊙ M) of the same network, taken w.r.t. the masked matrix
  w_tilde = jnp.where(mask, w, 0.0)
  b = model.b.to_dense()
  want = jax.grad(lambda wt: jnp.mean((jax.nn.gelu(x @ wt) @ b) ** 2))(w_tilde)
  np.testing.assert_allclose(grads["a"]["w"][...], want, rtol=1e-5, atol=1e-7)
  got = srste.grad(w, mask, grads["a"]["w"][...], plan.layers[0], plan.schedule)
  np.testing.assert_allclose(got, want + 0.1 * np.where(mask, 0.0, w), rtol=1e-5, atol=1e-7)
  assert np.asarray(w)[~np.asarray(mask)].any()   # SR-STE keeps a dense W


def test_srste_masks_are_n_of_m_of_the_magnitudes_after_every_update():
  for _, model, _, _, _ in _run("srste", 12, kind="nm_sparse", hparams=dict(n=2, m=4),
                                delta_t=1, end_frac=1.0):
    for layer in (model.a, model.b):
      mask = np.asarray(layer.mask[...])
      assert (mask.reshape(-1, 4, mask.shape[1]).sum(axis=1) == 2).all()
      np.testing.assert_array_equal(mask, top_n_of_m(jnp.abs(layer.w[...]), 2, 4))


def test_spdf_lifts_the_mask_at_its_switch_and_ideal_flops_change_the_step_after():
  for t, model, _, _, plan in _run("spdf", 20, switch_frac=0.75):
    masks = _masks(model)
    assert all(m.all() for m in masks) == (t >= 15)
  costs = accounting.Accounting(plan, params_now=1000, live_now=sum(lp.kept for lp in plan.layers),
                                forward_flops=2 * (16 * 32 + 32 * 8),
                                tokens_per_layer=(1,) * len(plan.layers),
                                examples_per_step=1)
  sparse, dense = 3 * 2 * sum(lp.kept for lp in plan.layers), 3 * 2 * (16 * 32 + 32 * 8)
  assert [costs.ideal_flops_per_example(t) for t in (14, 15, 16, 17)] == [sparse, sparse, dense, dense]


def test_static_masks_never_move():
  first = None
  for _, model, _, _, _ in _run("static", 12):
    first = first or _masks(model)
    assert all((a == b).all() for a, b in zip(first, _masks(model)))


def test_erk_densities_match_the_global_budget_and_cap_at_one():
  cells, fans = [100 * 100, 1000 * 10, 10 * 10], [(100, 100), (1000, 10), (10, 10)]
  got = schedule.layer_densities(cells, fans, 0.5, "erk")
  assert got[2] == 1.0   # the small layer would exceed 1: dense
  assert sum(d * c for d, c in zip(got, cells)) == pytest.approx(0.5 * sum(cells))
  # the rest follow (n_in + n_out) / (n_in n_out) with one scale
  assert got[0] / got[1] == pytest.approx((200 / 10000) / (1010 / 10000))
  assert schedule.layer_densities(cells, fans, 0.3, "uniform") == [0.3] * 3


def test_mup_uses_the_effective_fan_in_for_init_and_lr():
  class Wide(nnx.Module):
    def __init__(self):
      self.a = structured.make("sparse", 256, 512, rngs=nnx.Rngs(0))

  model = Wide()
  sparsity.prepare(_config("static", density=0.25), model)
  core = model.a.cores()[0]
  assert (core.fan_in, core.fan_out) == (64, 128)   # density x fan-in, density x fan-out
  kept = np.asarray(model.a.w[...])[np.asarray(model.a.mask[...])]
  assert kept.size == 256 * 512 // 4
  assert np.std(kept) == pytest.approx(MUP.core_std(64, 128), rel=0.02)
  base = Wide()
  sparsity.prepare(_config("static", density=0.25), base)
  # Adam's rule: base d_in / effective fan-in (one core): 256 / 64
  assert MUP.lr_multipliers(model, base, depth=1)[("a", "w")] == pytest.approx(4.0)


def test_vit_ideal_flops_count_the_tokens_each_planned_layer_sees():
  # 16x16 images, 4x4 patches: the patch embedding sees 16 patches, every block layer those and
  # the class token (17), the head the pooled token (1); a masked-out weight saves 2 FLOPs per token
  model_cfg = ml_collections.ConfigDict(dict(
      name="vit", kind="sparse", width=32, depth=1, heads=2, patch=4, pool="cls", expansion=4,
      layers="all", use_bias=False, qk_norm=True, structure={}, overrides={}, dropout=0.0,
      dtype="float32", scan_layers=False, remat="none"))
  model = factory.build(run_config.parse_model(model_cfg),
                        {"image_shape": (16, 16, 3), "d_in": 768, "d_out": 10}, nnx.Rngs(0), MUP)
  plan = sparsity.prepare(_config("static", density=0.5), model)
  layers = masked.masked_layers(model)
  tokens = {path: model.layer_tokens(layers[path]) for path in layers}
  assert tokens[("embed",)] == 16 and tokens[("head",)] == 1
  assert {t for path, t in tokens.items() if path[0] in ("attn", "ffn")} == {17}
  costs = accounting.Accounting(plan, 0, 0, model.flops_per_example(),
                                tuple(tokens[lp.path] for lp in plan.layers), 1)
  masked_out = {lp.path: (lp.cells - lp.kept) * lp.block**2 for lp in plan.layers}
  skipped = sum(2 * tokens[path] * n for path, n in masked_out.items())
  assert costs.ideal_flops_per_example(1) == 3 * (model.flops_per_example() - skipped)
  assert skipped > 2 * sum(masked_out.values())   # counting one token per layer undercounts
