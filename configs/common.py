"""Shared config pieces: the ``arg`` string parser, optimizer / muP / wandb defaults."""

from __future__ import annotations

import ast

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'kind=btt,rank=2,runlocal' -> {'kind': 'btt', 'rank': 2, 'runlocal': True, **defaults}.

  Values are Python literals where they parse as one, else strings. Keys not in
  ``defaults`` are kept: they are the structure family's hyperparameters.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if not _:
      out[key] = True
      continue
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return ml_collections.ConfigDict(out)


def run(steps: int, batch_size: int, log_every: int, eval_every: int,
        checkpoint_every: int) -> ml_collections.ConfigDict:
  """The top level every config shares: seed, duration, logging and checkpoint cadence."""
  return ml_collections.ConfigDict(dict(
      seed=0, steps=steps, batch_size=batch_size, log_every=log_every, eval_every=eval_every,
      checkpoint_every=checkpoint_every, max_to_keep=2,
      debug=ml_collections.ConfigDict(dict(nan_at_step=0))))   # nan_at_step: tests the NaN guard


def optim(lr: float = 3e-3, **overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      name="adamw", lr=lr, b1=0.9, b2=0.999, eps=1e-8, eps_mup=False, weight_decay=0.0, grad_clip=1.0,
      schedule="cosine", warmup_steps=100, final_lr_frac=0.0, decay_frac=0.2))
  cfg.update(overrides)
  return cfg


def model_structure(arg: ml_collections.ConfigDict, arg_keys) -> ml_collections.ConfigDict:
  """The structure hyperparameters: every arg key that is not a top-level arg key."""
  return ml_collections.ConfigDict({k: v for k, v in arg.items() if k not in arg_keys})


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Device mesh sizes; -1 takes all remaining devices (see experiments/sharding.py)."""
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def wandb(project: str = "strux") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(mode="offline", project=project))
