"""Alike tensors stacked, so a per-tensor reduction compiles once per group, not per block.

Unrolled blocks hold one tensor per role per block ('blocks/3/up/w', 'attn/7/q/w'). XLA
compiles a reduction once per tensor it touches, so the non-finite guard's checks over 12
blocks would compile 12 copies of the same check. ``Groups`` stacks the tensors whose paths
differ only in their block index (and that share shape, dtype and any signature the caller adds)
along a new leading axis; the rest stay alone. (Models with ``scan_layers`` store their blocks
stacked already, models/stack.py.)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np

from experiments.train.paths import Path, by_path


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

  def per_leaf(self, reduce: Callable[[jax.Array], jax.Array], tree) -> jax.Array:
    """``[reduce(leaf) for leaf in leaves(tree)]`` (scalar reductions), computed once per group."""
    stacked = self.stack(tree)
    values = jnp.concatenate([
        jax.vmap(reduce)(stacked[name]) if len(paths) > 1 else reduce(stacked[name])[None]
        for name, paths in self.members.items()])
    order = {path: i for i, path in enumerate(p for paths in self.members.values() for p in paths)}
    return values[np.array([order[path] for path in by_path(tree)])]
