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


def model(name: str, arg: ml_collections.ConfigDict, arg_keys, **fields) -> ml_collections.ConfigDict:
  """A model config: ``name``, the family ``arg.kind`` and its structure hyperparameters, the
  options every model reads (dropout, compute dtype, per-layer-type structure ``overrides``,
  depth-muP ``base_depth``; 0 = off) and the model's own ``fields``."""
  cfg = dict(name=name, kind=arg.kind, dropout=0.0, dtype="float32", overrides={}, base_depth=0,
             structure=model_structure(arg, arg_keys))
  cfg.update(fields)
  return ml_collections.ConfigDict(cfg)


def image_data(name: str, **overrides) -> ml_collections.ConfigDict:
  """An image task (see experiments/images.py): the dataset and its source ('tfds', or 'idx'
  for Fashion-MNIST's Debian files), image size, augmentations (pad-and-crop, flip, mixup,
  label smoothing) and evaluation batching."""
  cfg = ml_collections.ConfigDict(dict(
      name=name, source="tfds", dir="", image_size=32, crop=0, flip=True, mixup_alpha=0.0, label_smoothing=0.0,
      eval_batch=1000, eval_examples=0, read_threads=1, seed_offset=0))
  cfg.update(overrides)
  return cfg


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Device mesh sizes; -1 takes all remaining devices (see experiments/sharding.py)."""
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def wandb(project: str = "strux") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(mode="offline", project=project))
