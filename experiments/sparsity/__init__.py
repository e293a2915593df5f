"""Sparse training whose masks move: the method chosen by ``sparsity.method`` (one module each),
run through the mask interface of structured/masked.py on 'sparse', 'nm_sparse' and
'block_sparse' layers. The methods work on a dense weight and its mask grid; a slot-stored
layer (block_sparse: only its K kept blocks, at coordinates that are state) is moved through its
dense view, on update steps only, and its new mask written back into the same K slots
(``masked.to_slots``), so its compute stays sparse and K fixed (static, SET, RigL, whose dense
gradient such a layer gives through a ``masked.GradProbe`` on update steps only; plan.py says why
GMP and SPDF need kind 'sparse').

Three entry points:
  - ``prepare(config, model)`` (at build, before muP init and the optimizer): the plan, each
    layer's mask and weight set for the method (density from uniform/ERK, dense for GMP);
  - ``update(model, optimizer, grads, plan, probe_grads)`` (inside the jitted train step, in
    place of ``optimizer.update``): the method's gradient rule, the optimizer update, then on
    update steps (``lax.cond``, no host round trip) the new masks and the reset of changed
    entries' moments; ``probe_grads(model)`` gives the probes' gradients it needs;
  - ``accounting.Accounting`` (host): density, live and time-averaged parameters, ideal FLOPs.
Masks are ``masked.Mask`` variables of the model, so checkpoints hold them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.train.paths import by_path, path_key
from experiments.sparsity import gmp, plan as plans, rigl, schedule, set_regrow, spdf, srste, static
from structured import masked

METHODS = {"static": static, "gmp": gmp, "set": set_regrow, "rigl": rigl, "srste": srste,
           "spdf": spdf}
assert set(METHODS) == set(schedule.METHODS) - {"none"}


def make_plan(config, model: nnx.Module) -> plans.Plan | None:
  """The plan of a RunConfig's ``sparsity`` section (None for method 'none'); depends only on
  the config and the model's shapes, so it can be rebuilt for a restored model."""
  return plans.make(schedule.make(config.sparsity, config.steps, config.seed), model)


def prepare(config, model: nnx.Module) -> plans.Plan | None:
  """Builds the plan and sets every planned layer up for its method (outside jit): masks and
  weights redrawn at the run's muP init (``config.mup``: core std, zero-init roles)."""
  plan = make_plan(config, model)
  if plan is None:
    return None
  method, layers = METHODS[plan.schedule.method], masked.masked_layers(model)
  for index, lp in enumerate(plan.layers):
    layer = layers[lp.path]
    layer.straight_through = method.STRAIGHT_THROUGH
    method.setup(layer, lp, jax.random.fold_in(jax.random.key(plan.schedule.seed), index),
                 config.mup.core_std)
    if config.mup.starts_at_zero(layer.role):
      weight = getattr(layer, lp.weight)
      weight[...] = jnp.zeros_like(weight[...])
  return plan


def _map_paths(tree, fns: dict):
  """``tree`` with each leaf at a path in ``fns`` replaced by ``fns[path](leaf)``."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: fns[path_key(p)](x) if path_key(p) in fns else x, tree)


def update(model: nnx.Module, optimizer: nnx.Optimizer, grads, plan: plans.Plan | None,
           probe_grads=None) -> None:
  """The optimizer step with the plan's mask updates; call inside the jitted train step.

  ``probe_grads(model)``: the gradient of the step's loss w.r.t. the model's
  ``masked.GradProbe``s, as ``nnx.grad`` gives it; needed when ``plan.probes`` (run on update
  steps only, on a copy of the model, so nothing it does to the model is kept).
  """
  if plan is None:
    optimizer.update(model, grads)
    return
  method, sched = METHODS[plan.schedule.method], plan.schedule
  layers = masked.masked_layers(model)
  step = optimizer.step[...].astype(jnp.int32) + 1   # the step being taken, 1-based
  # slot-stored layers hold only kept weights: their gradient needs no masking
  weights = {lp.path + (lp.weight,): (lp, layers[lp.path]) for lp in plan.layers if not lp.slots}
  dense_grads = by_path(grads)
  is_update = plan.is_update(step)
  if plan.probes:
    dense_grads.update(by_path(_probe_grads(model, probe_grads, is_update)))
  optimizer.update(model, _map_paths(grads, {
      key: lambda g, lp=lp, layer=layer: method.grad(getattr(layer, lp.weight)[...],
                                                     layer.mask[...], g, lp, sched)
      for key, (lp, layer) in weights.items()}))
  index = jnp.maximum(step - plan.first, 0) // plan.every
  changed = {}
  for number, lp in enumerate(plan.layers):
    layer, key = layers[lp.path], lp.path + (lp.weight,)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(sched.seed), step), number)
    if not lp.slots:
      g = dense_grads[key]
    else:   # slot layers: only RigL's probe gives them a dense gradient
      g = dense_grads[lp.path + ("grad_probe",)] if plan.probes else None
    changed[key] = _move(layer, lp, method, sched, is_update, g, index, rng)
  if method.RESET_MOMENTS:
    _reset_moments(optimizer, changed)


def _probe_grads(model: nnx.Module, probe_grads, is_update: jax.Array):
  """``probe_grads`` of ``model`` on update steps, zeros otherwise (``lax.cond``: the dense
  products run only when taken)."""
  graphdef, state = nnx.split(model)
  return jax.lax.cond(
      is_update, lambda s: probe_grads(nnx.merge(graphdef, s)),
      lambda s: jax.tree.map(jnp.zeros_like, nnx.state(nnx.merge(graphdef, s), masked.GradProbe)),
      state)


def _move(layer, lp: plans.LayerPlan, method, sched, is_update, g, index, rng) -> jax.Array:
  """Applies ``method.update`` to ``layer``'s weight and mask when ``is_update`` (``lax.cond``);
  returns which entries of the weight changed (the weight's shape)."""
  w, state = getattr(layer, lp.weight), layer.coords if lp.slots else layer.mask

  def moved(w, state, g, u, key):
    if not lp.slots:
      new_w, new_mask = method.update(w, state, g, u, key, lp, sched)
      return new_w, new_mask, masked.expand(new_mask != state, lp.block)
    rows, cols = state[:, 0], state[:, 1]
    dense_w = masked.to_dense(w, rows, cols, layer.d_in, layer.d_out)
    mask = masked.grid(rows, cols, (layer.d_in // lp.block, layer.d_out // lp.block))
    new_w, new_mask = method.update(dense_w, mask, g, u, key, lp, sched)
    return masked.to_slots(new_w, new_mask, state, lp.block)

  def same(w, state, *_):
    return w, state, jnp.zeros(w.shape, bool)

  w[...], state[...], changed = jax.lax.cond(is_update, moved, same, w[...], state[...], g,
                                             index, rng)
  return changed


def _reset_moments(optimizer: nnx.Optimizer, changed: dict[tuple, jax.Array]) -> None:
  """Zeroes every optimizer-state entry (Adam's moments, SGD's trace) of a weight whose mask
  entry changed: regrown weights start fresh, pruned ones stay exactly 0."""
  def reset(path, x):
    keys = path_key(path)
    hit = next((c for k, c in changed.items() if keys[0] == "opt_state" and
                keys[-len(k):] == k and x.shape == c.shape), None)
    return x if hit is None else jnp.where(hit, jnp.zeros_like(x), x)

  nnx.update(optimizer, jax.tree_util.tree_map_with_path(reset, nnx.state(optimizer)))
