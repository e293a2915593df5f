"""The training loop: build task, model and optimizer from the config, train, evaluate, log."""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from experiments import data, optim, step as steps, writers
from models import factory
from structured import mup


def build(config: ml_collections.ConfigDict):
  """Task, model, optimizer and the muP multipliers for ``config`` (no training)."""
  task = data.make(config.data, config.batch_size, config.seed)
  model = factory.build(config.model, task.d_in, task.d_out, nnx.Rngs(config.seed))
  mup.apply_init(model, config.mup.parametrization)
  base = factory.build_base(config.model, task.d_in, task.d_out)
  tx, mults = optim.make(config.optim, model, base, config.mup.parametrization, config.steps)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  return task, model, optimizer, mults


def evaluate(model, task) -> dict[str, float]:
  """Eval metrics averaged over the task's eval batches, keyed ``eval_<metric>``."""
  results = [steps.eval_step(model, batch, task.loss) for batch in task.eval_batches()]
  return {f"eval_{k}": float(np.mean([r[k] for r in results])) for k in results[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``config.steps`` steps, writing metrics to ``workdir``; returns the final record."""
  task, model, optimizer, mults = build(config)
  logging.info("muP (%s) per-core multipliers:\n%s", config.mup.parametrization,
               mup.describe(model, mults))
  params = sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  flops_per_example = 3 * model.flops_per_example()   # forward + backward = 3 x forward
  writer = writers.MetricWriter(workdir, config, config.steps)
  record = {}
  t0 = time.time()
  for step in range(1, config.steps + 1):
    loss = steps.train_step(model, optimizer, task.train_batch(step), task.loss)
    examples = step * config.batch_size
    last = step == config.steps
    if step % config.log_every == 0 or step % config.eval_every == 0 or last:
      record = {"step": step, "examples": examples, "flops": examples * flops_per_example,
                "train_loss": float(loss), "params": params,
                "lr": float(optim.schedule(config.optim, config.steps)(step)),
                "time": time.time() - t0}
      if step % config.eval_every == 0 or last:
        record.update(evaluate(model, task))
      if last:
        record["final"] = True
      writer.write(record)
      writer.progress(step, record["train_loss"], examples)
  writer.close()
  return record
