"""Checkpoints on orbax: model, optimizer state and run metadata (step, examples), atomically.

Data needs no iterator state: every batch is a pure function of (seed, step), so the step
restores the data position exactly. ``restore_latest`` walks back from the newest checkpoint
past any that cannot be read (a partial or corrupted write). Unreadable checkpoints are never
written over or deleted: once a readable one is found, the newer unreadable ones are moved to
``workdir/checkpoints_unreadable/<step>`` (so the resumed run can save those steps again);
when none is readable, nothing is touched and ``CheckpointError`` says what to do.
Blocks stored stacked (``model.scan_layers``) and per block restore into each other
(``relayout``), so a run can switch ``scan_layers`` on resume, and checkpoints written before
scanned blocks were stored stacked restore. Checkpoints written before block_sparse's
coordinates became state (``masked.Coords``) hold no coordinates: they restore without them,
keeping the seed-drawn ones the layer is built with (the only ones such runs could have).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from experiments.errors import CheckpointError
from experiments.train.paths import by_path, path_key
from models import stack
from structured import masked

UNREADABLE = "checkpoints_unreadable"


class Checkpointer:
  """Saves ``(model, optimizer)`` under ``workdir/checkpoints/<step>``, keeping ``max_to_keep``."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def save(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(nnx.state(model)),
        optimizer=ocp.args.StandardSave(nnx.state(optimizer)),
        meta=ocp.args.JsonSave(dict(meta, step=step))), force=True)
    self.manager.wait_until_finished()

  def restore_latest(self, model: nnx.Module, optimizer: nnx.Optimizer) -> dict | None:
    """Loads the newest readable checkpoint into ``model`` and ``optimizer``; its meta, or None
    when there is no checkpoint. Newer unreadable ones are moved aside (module docstring);
    CheckpointError, with nothing changed, when there are checkpoints but none is readable."""
    unreadable = {}
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self._restore(step, model, optimizer)
      except Exception as e:   # orbax raises many types for unreadable files
        unreadable[step] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        logging.warning("checkpoint %s/%d is unreadable (%s); trying the one before",
                        self.directory, step, unreadable[step])
        print(f"warning: checkpoint at step {step} is unreadable; trying the one before", flush=True)
        continue
      self._move_aside(sorted(unreadable))
      nnx.update(model, restored["model"])
      nnx.update(optimizer, restored["optimizer"])
      return dict(restored["meta"])
    if unreadable:
      newest = max(unreadable)
      raise CheckpointError(
          f"every checkpoint in {self.directory} is unreadable (steps {sorted(unreadable)}; step "
          f"{newest}: {unreadable[newest]}); nothing was changed. To train from step 0 keeping "
          f"them, move {self.directory} aside or use another --workdir")
    return None

  def _restore(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer) -> dict:
    def restore(model_state):
      return self.manager.restore(step, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(model_state),
          optimizer=ocp.args.StandardRestore(nnx.state(optimizer)),
          meta=ocp.args.JsonRestore()))

    try:
      return restore(nnx.state(model))
    except Exception:
      if jax.tree.leaves(nnx.state(model, masked.Coords)):
        return restore(nnx.state(model, nnx.Not(masked.Coords)))   # written before Coords
      saved = self.manager.restore(step, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(), optimizer=ocp.args.StandardRestore(),
          meta=ocp.args.JsonRestore()))
      return dict(saved, model=relayout(saved["model"], nnx.state(model)),
                  optimizer=relayout(saved["optimizer"], nnx.state(optimizer)))

  def _move_aside(self, steps: list[int]) -> None:
    """Moves the step directories to ``workdir/checkpoints_unreadable/<step>`` (a numbered
    suffix if that exists) and makes the manager forget them; process 0 moves."""
    if not steps:
      return
    aside = os.path.join(os.path.dirname(self.directory), UNREADABLE)
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target, n = os.path.join(aside, str(step)), 0
        while os.path.exists(target):
          n += 1
          target = os.path.join(aside, f"{step}.{n}")
        os.rename(os.path.join(self.directory, str(step)), target)
        print(f"warning: moved the unreadable checkpoint at step {step} to {target}", flush=True)
    ocp.multihost.sync_global_processes("strux_unreadable_checkpoints_moved")
    self.manager.reload()

  def close(self) -> None:
    self.manager.close()


def relayout(saved, like):
  """``saved`` (a restored state tree) in the structure, dtypes and shardings of ``like``, where
  the two store blocks differently: stacked (``model.scan_layers``, models/stack.py) or one
  variable per block. KeyError names a variable ``saved`` lacks."""
  flat = {_keys(path): x for path, x in by_path(saved).items()}

  def value(path, like_x):
    if _keys(path) in flat:
      return flat[_keys(path)]
    if stack.is_stacked(path):
      return np.stack([flat[_keys(p)] for p in stack.per_block_paths(path, like_x.shape[0])])
    for at, index in enumerate(path):
      stacked = _keys(path[:at] + (stack.AXIS,) + path[at + 1:])
      if isinstance(index, int) and stacked in flat:
        return flat[stacked][index]
    raise KeyError(f"the checkpoint has no {'/'.join(map(str, path))}")

  return jax.tree_util.tree_map_with_path(lambda p, x: jax.device_put(
      np.asarray(value(path_key(p), x), x.dtype), x.sharding), like)


def _keys(path: tuple) -> tuple[str, ...]:
  return tuple(map(str, path))   # orbax restores int keys (list and tuple indices) as strings
