"""Alike parameters stacked, so a step's per-tensor work compiles once per group, not per block.

The blocks of a model hold one tensor per role per block ('blocks/3/up/w', 'attn/7/q/w'). XLA
compiles an elementwise update or a reduction once per tensor it touches, so an optimizer step
unrolled over 12 blocks compiles 12 copies of the same Adam update and norm
(benchmarks/results/compile_time_cpu.md). ``Groups`` stacks the tensors whose paths differ only
in their block index (and that share shape, dtype and any signature the caller adds) along a new
leading axis; the rest stay alone. ``stacked`` runs an optax transformation on the stacked tree
while its state stays per tensor (the layout checkpoints, sharding and the sparsity steps see).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.train.paths import Path, by_path, path_key


@dataclasses.dataclass(frozen=True)
class Groups:
  """``members``: per group name, the paths it stacks in block order (one path: kept alone)."""
  members: dict[str, tuple[Path, ...]]

  @classmethod
  def of(cls, tree, signature: Callable[[Path], Hashable] = lambda path: None) -> Groups:
    """Groups of ``tree``'s leaves whose paths differ only in integer (block index) keys and that
    share shape, dtype and ``signature(path)``."""
    found: dict[tuple, list[Path]] = {}
    for path, x in by_path(tree).items():
      pattern = tuple("*" if isinstance(k, int) else k for k in path)
      found.setdefault((pattern, x.shape, str(x.dtype), signature(path)), []).append(path)
    return cls({f"{'/'.join(map(str, key[0]))}#{i}": tuple(paths)
                for i, (key, paths) in enumerate(found.items())})

  def stack(self, tree) -> dict[str, jax.Array]:
    """Per group, its members stacked on a new leading axis (a lone member as it is)."""
    flat = by_path(tree)
    return {name: jnp.stack([flat[p] for p in paths]) if len(paths) > 1 else flat[paths[0]]
            for name, paths in self.members.items()}

  def unstack(self, stacked: dict, like):
    """``stacked`` (``stack``'s layout) back into the structure of ``like``; a masked group
    (``optax.MaskedNode``) gives every member that node."""
    flat = {}
    for name, paths in self.members.items():
      value = stacked[name]
      for i, path in enumerate(paths):
        whole = isinstance(value, optax.MaskedNode) or len(paths) == 1
        flat[path] = value if whole else value[i]
    return jax.tree_util.tree_map_with_path(lambda p, _: flat[path_key(p)], like)

  def per_leaf(self, reduce: Callable[[jax.Array], jax.Array], tree) -> jax.Array:
    """``[reduce(leaf) for leaf in leaves(tree)]`` (scalar reductions), computed once per group."""
    stacked = self.stack(tree)
    values = jnp.concatenate([
        jax.vmap(reduce)(stacked[name]) if len(paths) > 1 else reduce(stacked[name])[None]
        for name, paths in self.members.items()])
    order = {path: i for i, path in enumerate(p for paths in self.members.values() for p in paths)}
    return values[np.array([order[path] for path in by_path(tree)])]

  def _is_stacked_tree(self, node) -> bool:
    return isinstance(node, dict) and set(node) == set(self.members)

  def stack_state(self, state, template):
    """A per-tensor optax state in the stacked layout of ``template`` (the state the
    transformation gives stacked parameters): param-shaped subtrees stacked, the rest as is."""
    flat = by_path(state)

    def convert(path, node):
      prefix = path_key(path)
      if not self._is_stacked_tree(node):
        return flat[prefix]
      return {name: node[name] if isinstance(node[name], optax.MaskedNode) else
              (jnp.stack([flat[prefix + p] for p in paths]) if len(paths) > 1
               else flat[prefix + paths[0]])
              for name, paths in self.members.items()}

    return jax.tree_util.tree_map_with_path(convert, template, is_leaf=self._is_stacked_tree)

  def unstack_state(self, state, like):
    """A stacked optax state per tensor again, param-shaped subtrees shaped like ``like``."""
    return jax.tree.map(lambda node: self.unstack(node, like) if self._is_stacked_tree(node)
                        else node, state, is_leaf=self._is_stacked_tree)


def stacked(inner: optax.GradientTransformation, groups: Groups) -> optax.GradientTransformation:
  """``inner``, built for the stacked tree (``groups.stack``, keyed by group name), as a
  transformation of the per-tensor tree with per-tensor state. Stacked results pass an
  optimization barrier before they are split, so XLA computes them once instead of once per slice
  it writes back."""
  def init(params):
    return groups.unstack_state(inner.init(groups.stack(params)), params)

  def update(updates, state, params=None):
    stacked_updates = groups.stack(updates)
    template = jax.eval_shape(inner.init, stacked_updates)
    new, state = inner.update(stacked_updates, groups.stack_state(state, template),
                              None if params is None else groups.stack(params))
    if any(len(paths) > 1 for paths in groups.members.values()):
      new, state = jax.lax.optimization_barrier((new, state))
    return groups.unstack(new, updates), groups.unstack_state(state, updates)

  return optax.GradientTransformation(init, update)
