"""Shared config pieces: the ``arg`` string parser, optimizer / muP / wandb defaults."""

from __future__ import annotations

import ml_collections

from configs import structure


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """The config's arg string, ``defaults`` declaring its keys: 'kind=btt,rank=2,runlocal' ->
  {**defaults, 'kind': 'btt', 'runlocal': True, 'structure': {'rank': 2}}.

  Keys not in ``defaults`` are the structure family's hyperparameters (``structure``).
  """
  given = structure.parse_pairs(arg)
  args = {**defaults, **{k: v for k, v in given.items() if k in defaults}}
  args["structure"] = {k: v for k, v in given.items() if k not in defaults}
  return ml_collections.ConfigDict(args)


def run(steps: int, batch_size: int, log_every: int, eval_every: int,
        checkpoint_every: int) -> ml_collections.ConfigDict:
  """The top level every config shares: seed, duration, logging and checkpoint cadence,
  ``microbatches`` (gradient accumulation: the global batch in that many scanned pieces) and
  ``profile_steps`` ('' = off, or 'FIRST-LAST', e.g. '10-15': a jax.profiler trace of those
  steps into <workdir>/profile)."""
  return ml_collections.ConfigDict(dict(
      seed=0, steps=steps, batch_size=batch_size, microbatches=1, log_every=log_every,
      eval_every=eval_every, checkpoint_every=checkpoint_every, max_to_keep=2,
      profile_steps="", sparsity=sparsity()))


def optim(lr: float = 3e-3, **overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      name="adamw", lr=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
      schedule="cosine", warmup_steps=100, final_lr_frac=0.0, decay_frac=0.2))
  cfg.update(overrides)
  return cfg


def model(name: str, arg: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
  """A model config: ``name``, the family ``arg.kind`` and its structure hyperparameters, the
  options every model reads (dropout, compute dtype, per-layer-type structure ``overrides``,
  ``scan_layers``: the blocks stored stacked and run as one scan, see models/stack.py; ``remat``:
  what each block keeps for its backward, 'none', 'full' or 'dots', models/stack.REMAT) and the
  model's own ``fields``."""
  cfg = dict(name=name, kind=arg.kind, dropout=0.0, dtype="float32", overrides={},
             scan_layers=False, remat="none",
             structure=arg.structure)
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


def mup(parametrization: str, base_width: int, base_depth: int = 0) -> ml_collections.ConfigDict:
  """Every muP setting (structured/mup.py): 'mup' or 'standard', the base model's width, the
  depth-muP base depth (0 = off), Adam's per-parameter eps (``eps_mup``, off) and whether
  residual-branch outputs and the readout start at zero (``zero_init``, on)."""
  return ml_collections.ConfigDict(dict(parametrization=parametrization, base_width=base_width,
                                        base_depth=base_depth, eps_mup=False, zero_init=True))


def sparsity(**overrides) -> ml_collections.ConfigDict:
  """Moving-mask sparse training (experiments/sparsity/schedule.py has every key); method 'none'
  leaves masks as the structure family built them."""
  cfg = ml_collections.ConfigDict(dict(
      method="none", density=0.1, distribution="uniform", delta_t=100, start_frac=0.0,
      end_frac=0.75, drop_fraction=0.3, lambda_w=2e-4, switch_frac=0.5))
  cfg.update(overrides)
  return cfg


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Device mesh sizes; -1 takes all remaining devices (see experiments/sharding.py)."""
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def wandb(project: str = "strux") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(mode="offline", project=project))
