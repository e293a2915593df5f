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

# ``model.remat``: what a block keeps for its backward pass. 'none': every activation it needs;
# 'full': only its input (the backward recomputes the block's forward); 'dots': the outputs of
# its matmuls without batch dims (elementwise work recomputed). Remat trades FLOPs for memory; on
# XLA:CPU it also makes a scanned step faster, since the scan's saved activations are written
# into stacked buffers by single-threaded dynamic-update-slice kernels (README).
REMAT = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
         "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}
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


def run(roles: Sequence[Stacked | Sequence[nnx.Module]], h, remat: str = "none"):
  """``h`` through every block: block i applies role 0's module i, then role 1's, ... Stacked
  roles run as one scan (each block's dropout stream advances as it would unrolled). ``remat``
  (``REMAT``) rematerializes each block in the backward pass."""
  policy = REMAT[remat]
  if isinstance(roles[0], Stacked):
    graphdefs, states = zip(*(nnx.split(role.stacked) for role in roles))
    h, rng_states = jax.lax.scan(_block(graphdefs, policy), h, list(states))
    for role, rng_state in zip(roles, rng_states):
      nnx.update(role.stacked, rng_state)
    return h
  for block in zip(*roles):
    if policy is None:   # modules called as they are (coordinate checks capture their outputs)
      for module in block:
        h = module(h)
      continue
    graphdefs, states = zip(*(nnx.split(module) for module in block))
    h, rng_states = _block(graphdefs, policy)(h, list(states))
    for module, rng_state in zip(block, rng_states):
      nnx.update(module, rng_state)
  return h


def _block(graphdefs, policy):
  """One block as a pure function (h, its modules' states) -> (h, their new RNG states),
  under ``jax.checkpoint`` with ``policy`` unless None."""
  def block(h, states):
    modules = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]
    for module in modules:
      h = module(h)
    return h, [nnx.state(module, nnx.RngState) for module in modules]
  return block if policy is None else jax.checkpoint(block, policy=policy)


def is_stacked(path: tuple) -> bool:
  """Whether the variable at ``path`` (model or optimizer state) is stored stacked."""
  return AXIS in path


def per_block_paths(path: tuple, depth: int) -> list[tuple]:
  """The per-block layout's paths of a stacked variable's rows."""
  at = path.index(AXIS)
  return [path[:at] + (i,) + path[at + 1:] for i in range(depth)]
