"""Checkpoints on orbax: model, optimizer state and run metadata (step, examples), atomically.

Data needs no iterator state: every batch is a pure function of (seed, step), so the step
restores the data position exactly. ``restore_latest`` walks back from the newest checkpoint
past any that cannot be read (a partial or corrupted write), warning about each one.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp
from absl import logging
from flax import nnx


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
    """Loads the newest readable checkpoint into ``model`` and ``optimizer``; its meta, or None."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(nnx.state(model)),
            optimizer=ocp.args.StandardRestore(nnx.state(optimizer)),
            meta=ocp.args.JsonRestore()))
      except Exception as e:   # orbax raises many types for unreadable files
        logging.warning("checkpoint %s/%d is unreadable (%s: %s); trying the one before",
                        self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
        print(f"warning: checkpoint at step {step} is unreadable; trying the one before", flush=True)
        continue
      nnx.update(model, restored["model"])
      nnx.update(optimizer, restored["optimizer"])
      return dict(restored["meta"])
    return None

  def close(self) -> None:
    self.manager.close()
