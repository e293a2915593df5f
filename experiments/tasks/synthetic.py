"""The synthetic teacher-student regression task (einsum-search)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.tasks.rows import host_rows


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
    batch = self._sample(jax.random.fold_in(jax.random.key(self.seed + 2), step), self.batch_size)
    return host_rows(batch)

  def eval_batches(self):
    return [host_rows(self._sample(jax.random.key(self.seed + 3), self.eval_examples))]


def _teacher(weights, x_BxI):
  h = x_BxI
  for w in weights[:-1]:
    h = jax.nn.relu(h @ w)
  return h @ weights[-1]
