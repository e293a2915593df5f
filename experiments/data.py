"""Data sources. Each task gives ``d_in``, ``d_out``, the loss name, ``train_batch(step)`` and
``eval_batches()``; batches are deterministic functions of the seed and the step, so a resumed
run sees exactly the data it would have seen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

TASKS = ("teacher", "bytes", "fashion_mnist")


class DataError(ValueError):
  """Missing or unusable data; the message says where it was looked for and how to get it."""


class TeacherStudent:
  """Synthetic regression of the einsum-search paper: a fixed random ReLU MLP teacher.

  x ~ N(0, I_d_in); y = teacher(x), normalized to unit variance per output. Every training
  step draws fresh samples (online learning, no overfitting), so the loss measures how well
  the student's function class approximates the teacher for the compute spent.
  """

  loss = "mse"
  tokens_per_example = 1

  def __init__(self, d_in: int, d_out: int, width: int, depth: int, *, seed: int,
               batch_size: int, eval_examples: int = 4096):
    self.d_in, self.d_out, self.seed, self.batch_size = d_in, d_out, seed, batch_size
    self.spec = {"d_in": d_in, "d_out": d_out}
    self.eval_examples = eval_examples
    dims = [d_in] + [width] * depth + [d_out]
    keys = jax.random.split(jax.random.key(seed), len(dims) - 1)
    weights = [jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a) for k, a, b in zip(keys, dims, dims[1:])]
    probe = _teacher(weights, jax.random.normal(jax.random.key(seed + 1), (8192, d_in)))
    self._weights = [w / jnp.std(probe, axis=0) if i == len(weights) - 1 else w
                     for i, w in enumerate(weights)]
    self._sample = jax.jit(self._draw, static_argnums=1)

  def _draw(self, key, n):
    x = jax.random.normal(key, (n, self.d_in))
    return {"x": x, "y": _teacher(self._weights, x)}

  def train_batch(self, step: int):
    return self._sample(jax.random.fold_in(jax.random.key(self.seed + 2), step), self.batch_size)

  def eval_batches(self):
    return [self._sample(jax.random.key(self.seed + 3), self.eval_examples)]


def _teacher(weights, x_BxI):
  h = x_BxI
  for w in weights[:-1]:
    h = jax.nn.relu(h @ w)
  return h @ weights[-1]


def make(cfg: ml_collections.ConfigDict, batch_size: int, seed: int):
  """The task named ``cfg.name``."""
  if cfg.name == "teacher":
    return TeacherStudent(cfg.d_in, cfg.d_out, cfg.width, cfg.depth, seed=seed + cfg.seed_offset,
                          batch_size=batch_size, eval_examples=cfg.eval_examples)
  if cfg.name == "bytes":
    from experiments.text import ByteText
    return ByteText(cfg.dir, cfg.pattern, cfg.seq_len, seed=seed + cfg.seed_offset,
                    batch_size=batch_size, max_bytes=cfg.max_bytes, eval_batches=cfg.eval_batches)
  if cfg.name == "fashion_mnist":
    from experiments.images import ImageClassification
    return ImageClassification(cfg.dir, seed=seed + cfg.seed_offset, batch_size=batch_size,
                               flip=cfg.flip)
  raise DataError(f"data.name='{cfg.name}' is unknown; valid: {list(TASKS)}")
