"""The training loop: build task, model and optimizer from the config, train, evaluate, log."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments import sparsity
from experiments.config import RunConfig
from experiments.errors import NonFiniteError
from experiments.sparsity import accounting
from experiments.tasks import build as tasks
from experiments.train import (checkpoint, optim, preemption, prefetch, profiling, sharding,
                               step as steps, writers)
from experiments.train.guard import Guard
from models import factory
from structured import masked, mup


@dataclasses.dataclass
class Run:
  """What training needs, built from a RunConfig: task, model and optimizer (placed on the
  mesh), the muP lr multipliers and the lr schedule."""
  task: object
  model: nnx.Module
  optimizer: nnx.Optimizer
  mults: dict
  lr: optax.Schedule
  mesh: jax.sharding.Mesh


def build(config: RunConfig) -> Run:
  """The run's task, model, optimizer and mesh; no training."""
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(mesh, config.batch_size, config.microbatches)
  task = tasks.make(config.data, config.batch_size, config.seed)
  model = factory.build(config.model, task.spec, nnx.Rngs(config.seed), config.mup)
  sparsity.prepare(config, model)   # masks, densities and their init for the sparsity method
  sharding.place(model, mesh)
  base = factory.build_base(config.model, task.spec, config.mup)
  tx, mults, lr = optim.make(config.optim, model, base, config.mup, config.steps,
                             config.model.depth)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  sharding.place(optimizer, mesh)
  return Run(task, model, optimizer, mults, lr, mesh)


def evaluate(model, task, mesh) -> dict[str, float]:
  """Eval metrics averaged over the task's eval batches, keyed ``eval_<metric>``; language
  tasks that know their text's bytes per token also get ``eval_bits_per_byte``."""
  eval_model = nnx.view(model, deterministic=True)   # dropout off; shares the arrays
  results = [steps.eval_step(eval_model, sharding.shard_batch(batch, mesh), task.loss)
             for batch in task.eval_batches()]
  metrics = {f"eval_{k}": float(np.mean([r[k] for r in results])) for k in results[0]}
  if getattr(task, "bytes_per_token", None):
    metrics["eval_bits_per_byte"] = metrics["eval_bits_per_token"] / task.bytes_per_token
  return metrics


def train_and_evaluate(config: RunConfig, workdir: str) -> dict:
  """Trains to ``config.steps``, resuming from the newest readable checkpoint in ``workdir``.

  Saves every ``checkpoint_every`` steps and when SIGTERM arrives (then returns early with
  ``{"preempted": True}``). Steps are dispatched ahead: only steps that log, evaluate, save, stop
  or end read from the device, and each of those first reads the on-device non-finite guard
  (experiments/train/guard.py). A non-finite loss or gradient at any step writes a last metrics
  line holding ``"error"`` that names the first such step and tensor, and raises
  NonFiniteError without saving, so the last good checkpoint stays the newest. The steps in
  ``config.profile_steps`` are traced into ``workdir/profile``. Returns the last metrics record.
  """
  writers.check_workdir(workdir)
  run = build(config)
  task, model, optimizer, mesh = run.task, run.model, run.optimizer, run.mesh
  logging.info("muP per-core multipliers (%s):\n%s", config.mup, mup.describe(model, run.mults))
  ckpt = checkpoint.Checkpointer(workdir, config.max_to_keep) if config.checkpoint_every else None
  meta = ckpt.restore_latest(model, optimizer) if ckpt else None
  start = meta["step"] if meta else 0
  if start:
    print(f"resuming from the checkpoint at step {start}", flush=True)
  params = model.param_counts()
  flops_per_example = 3 * model.flops_per_example()   # forward + backward = 3 x forward
  plan = sparsity.make_plan(config, model)
  planned = plan and [masked.masked_layers(model)[lp.path] for lp in plan.layers]
  costs = plan and accounting.Accounting(
      plan, params["total"], sum(masked.live_count(layer) for layer in planned),
      model.flops_per_example(), tuple(model.layer_tokens(layer) for layer in planned),
      config.batch_size)
  writer = writers.MetricWriter(workdir, config.source, config.wandb, config.steps, start_step=start)
  guard = jax.device_put(Guard.start(nnx.state(model, nnx.Param)), NamedSharding(mesh, P()))

  def train_batch(step):
    return sharding.shard_batch(task.train_batch(step), mesh)

  def stop_if_non_finite(guard, step):
    bad = guard.first_bad()   # the one device sync of a step that needs the host
    if bad is None:
      return
    bad_step, bad_loss, bad_grad = bad
    message = (f"non-finite {'gradient' if bad_grad else 'loss'} at step {bad_step} (loss "
               f"{bad_loss}, first non-finite gradient: {bad_grad or 'none'}; seen at step "
               f"{step}); stopped without saving, the newest checkpoint (step {_saved(ckpt)}) "
               f"is intact")
    writer.write({"step": bad_step, "examples": bad_step * config.batch_size, "error": message})
    writer.close()
    raise NonFiniteError(message)

  batches = prefetch.prefetch(train_batch, range(start + 1, config.steps + 1))
  record = {}
  t0 = time.time()
  with (preemption.Notice() as notice, contextlib.closing(batches),
        profiling.StepTrace(config.profile_steps, workdir) as trace):
    for step, batch in batches:
      trace.before(step)
      loss, guard = steps.guarded_train_step(model, optimizer, batch, guard, task.loss,
                                             config.microbatches, plan)
      trace.after(step, (loss, guard))
      examples = step * config.batch_size
      last = step == config.steps
      evaluates = step % config.eval_every == 0 or last
      logs = step % config.log_every == 0 or evaluates
      preempted = notice(step)
      saves = ckpt and (step % config.checkpoint_every == 0 or last or preempted)
      if not (logs or saves or preempted):
        continue   # dispatch the next step without waiting for this one
      stop_if_non_finite(guard, step)
      if logs:
        record = {"step": step, "examples": examples, "tokens": examples * task.tokens_per_example,
                  "flops": examples * flops_per_example,
                  "train_loss": float(loss), "params": params["total"],
                  "non_embedding_params": params["non_embedding"], "lr": float(run.lr(step)),
                  "time": time.time() - t0}
        if costs:
          record.update(costs.record(step))
        if evaluates:
          record.update(evaluate(model, task, mesh))
        if last:
          record["final"] = True
        writer.write(record)
        writer.progress(step, record["train_loss"], examples, record["flops"])
      if saves:
        ckpt.save(step, model, optimizer, {"examples": examples})
      if preempted and not last:
        print(f"SIGTERM: saved the checkpoint at step {step}, stopping", flush=True)
        record = {"step": step, "preempted": True}
        break
  writer.close()
  if ckpt:
    ckpt.close()
  return record


def _saved(ckpt) -> int | None:
  return ckpt.manager.latest_step() if ckpt else None
