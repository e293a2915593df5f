"""Alike tensors stacked (experiments/train/stacking.py): groups by role, reductions per leaf."""

import jax
import jax.numpy as jnp
import numpy as np

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
  flat = by_path(tree)
  for name, paths in groups.members.items():
    np.testing.assert_array_equal(stacked[name], jnp.stack([flat[p] for p in paths])
                                  if len(paths) > 1 else flat[paths[0]])
  by_signature = stacking.Groups.of(tree, lambda path: path == ("blocks", 0, "w"))
  assert len(by_signature.members) == len(groups.members) + 1   # block 0's w split off


def test_per_leaf_reduces_in_leaf_order():
  tree = _tree()
  want = jnp.stack([jnp.sum(x) for x in jax.tree.leaves(tree)])
  got = stacking.Groups.of(tree).per_leaf(jnp.sum, tree)
  np.testing.assert_allclose(got, want, rtol=1e-6)
