"""Alike parameters stacked (experiments/train/stacking.py): the same numbers as per tensor, with
the per-tensor state layout kept."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.train import stacking
from experiments.train.paths import by_path


def _tree(seed=0):
  """Three blocks of (w [4, 3], b [3]), a lone embedding and a block whose w is wider."""
  keys = iter(jax.random.split(jax.random.key(seed), 16))
  blocks = [{"w": jax.random.normal(next(keys), (4, 3)), "b": jax.random.normal(next(keys), (3,))}
            for _ in range(3)]
  blocks.append({"w": jax.random.normal(next(keys), (4, 5)), "b": jax.random.normal(next(keys), (5,))})
  return {"blocks": blocks, "embed": jax.random.normal(next(keys), (7, 4))}


def test_groups_stack_block_copies_and_leave_the_rest_alone():
  tree = _tree()
  groups = stacking.Groups.of(tree)
  members = sorted(groups.members.values(), key=len)
  assert [len(m) for m in members] == [1, 1, 1, 3, 3]   # embed, block 3's w and b; w's, b's
  assert members[-1] in [tuple(("blocks", i, k) for i in range(3)) for k in ("b", "w")]
  stacked = groups.stack(tree)
  assert sorted(v.shape for v in stacked.values()) == [(3, 3), (3, 4, 3), (4, 5), (5,), (7, 4)]
  for a, b in zip(jax.tree.leaves(groups.unstack(stacked, tree)), jax.tree.leaves(tree), strict=True):
    np.testing.assert_array_equal(a, b)
  by_signature = stacking.Groups.of(tree, lambda path: path == ("blocks", 0, "w"))
  assert len(by_signature.members) == len(groups.members) + 1   # block 0's w split off


def test_per_leaf_reduces_in_leaf_order():
  tree = _tree()
  want = jnp.stack([jnp.sum(x) for x in jax.tree.leaves(tree)])
  got = stacking.Groups.of(tree).per_leaf(jnp.sum, tree)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_stacked_transformation_matches_the_per_tensor_one(clip):
  tree = _tree()
  paths = list(by_path(tree))
  mults = {p: 0.5 if p[-1] == "w" else 1.0 for p in paths}

  def chain(labels_of):   # adamw with a clip, a decay mask and per-path multipliers, as optim.make
    return optax.chain(
        optax.clip_by_global_norm(clip) if clip else optax.identity(),
        optax.scale_by_adam(),
        optax.add_decayed_weights(0.1, mask=lambda t: jax.tree.map(lambda x: x.ndim >= 2, t)),
        optax.multi_transform({"x0.5": optax.scale(0.5), "x1": optax.scale(1.0)}, labels_of),
        optax.scale(-1e-2))

  plain = chain(lambda t: jax.tree_util.tree_map_with_path(
      lambda p, _: "x0.5" if p[-1].key == "w" else "x1", t))
  groups = stacking.Groups.of(tree, lambda p: mults[p])
  stacked_mask = {n: tree_leaf.ndim >= 2 for n, tree_leaf in
                  ((n, by_path(tree)[m[0]]) for n, m in groups.members.items())}
  inner = optax.chain(
      optax.clip_by_global_norm(clip) if clip else optax.identity(),
      optax.scale_by_adam(),
      optax.add_decayed_weights(0.1, mask=lambda t: {n: stacked_mask[n] for n in t}),
      optax.multi_transform({"x0.5": optax.scale(0.5), "x1": optax.scale(1.0)},
                            lambda t: {n: "x0.5" if mults[groups.members[n][0]] == 0.5 else "x1"
                                       for n in t}),
      optax.scale(-1e-2))
  fast = stacking.stacked(inner, groups)
  params = {name: tree for name in ("plain", "fast")}
  states = {"plain": plain.init(tree), "fast": fast.init(tree)}
  assert jax.tree.structure(states["fast"]) == jax.tree.structure(states["plain"])
  update = {name: jax.jit(tx.update) for name, tx in (("plain", plain), ("fast", fast))}
  for step in range(3):
    grads = _tree(seed=step + 1)
    for name in update:
      new, states[name] = update[name](grads, states[name], params[name])
      params[name] = optax.apply_updates(params[name], new)
    for a, b in zip(jax.tree.leaves((params["fast"], states["fast"])),
                    jax.tree.leaves((params["plain"], states["plain"])), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
