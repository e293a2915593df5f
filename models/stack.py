"""Blocks stored stacked (``model.scan_layers``): one module per role whose variables carry a
leading [depth] axis, run as one ``jax.lax.scan``.

A model builds its blocks as usual (same init, same dropout streams) and ``Stacked`` stacks
their variables (MaxText's layout). The step's program then holds one block's forward, backward
and optimizer update whatever the depth, and one output per role: with a variable per block,
every block's parameters and Adam moments were separate outputs of the step, each its own
kernel, and compile time grew with depth (benchmarks/results/compile_time_cpu.md). A stacked
variable's path names the block axis by ``AXIS`` where the per-block layout has the index
('attn/3/q/w' is row 3 of 'attn/stacked/q/w'); ``per_block_paths`` maps one onto the other
(checkpoints convert, experiments/train/checkpoint.py).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

AXIS = "stacked"   # the attribute holding the stacked module: a path key of its variables


class Stacked(nnx.Module):
  """``depth`` blocks of one structure as one module of stacked variables (``self.stacked``)."""

  def __init__(self, blocks: Sequence[nnx.Module]):
    split = [nnx.split(block) for block in blocks]
    graphdef = split[0][0]
    if any(g != graphdef for g, _ in split):
      raise ValueError("model.scan_layers needs blocks of one structure; these differ "
                       "(set model.scan_layers=False)")
    self.depth = len(blocks)
    self.stacked = nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs),
                                                    *(state for _, state in split)))

  def unstacked(self) -> list[nnx.Module]:
    """Every block as its own module (copies of its slices): for counting, not training."""
    graphdef, state = nnx.split(self.stacked)
    return [nnx.merge(graphdef, jax.tree.map(lambda x: x[i], state)) for i in range(self.depth)]


def blocks(modules: Sequence[nnx.Module], scan: bool) -> Stacked | nnx.List:
  """One role's blocks as a model stores them: stacked with ``model.scan_layers``, else a list."""
  return Stacked(modules) if scan else nnx.List(modules)


def per_block(blocks: Stacked | Sequence[nnx.Module]) -> list[nnx.Module]:
  """The blocks one by one, stored stacked or as a list."""
  return blocks.unstacked() if isinstance(blocks, Stacked) else list(blocks)


def run(roles: Sequence[Stacked | Sequence[nnx.Module]], h):
  """``h`` through every block: block i applies role 0's module i, then role 1's, ... Stacked
  roles run as one scan (each block's dropout stream advances as it would unrolled)."""
  if not isinstance(roles[0], Stacked):
    for block in zip(*roles):
      for module in block:
        h = module(h)
    return h
  graphdefs, states = zip(*(nnx.split(role.stacked) for role in roles))

  def body(h, states):
    modules = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]
    for module in modules:
      h = module(h)
    return h, [nnx.state(module, nnx.RngState) for module in modules]

  h, rng_states = jax.lax.scan(body, h, list(states))
  for role, rng_state in zip(roles, rng_states):
    nnx.update(role.stacked, rng_state)
  return h


def is_stacked(path: tuple) -> bool:
  """Whether the variable at ``path`` (model or optimizer state) is stored stacked."""
  return AXIS in path


def per_block_paths(path: tuple, depth: int) -> list[tuple]:
  """The per-block layout's paths of a stacked variable's rows."""
  at = path.index(AXIS)
  return [path[:at] + (i,) + path[at + 1:] for i in range(depth)]
