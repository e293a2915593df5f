"""Data sources. Each task gives ``spec`` (what the model needs: d_in/d_out, vocab/seq_len or
image_shape/d_out), the loss name, ``tokens_per_example``, ``train_batch(step)`` and
``eval_batches()``. Batches are pure functions of the seed and the step, so a resumed run sees
exactly the data it would have seen; each host gets only its own rows of the global batch
(``jax.process_index()`` of ``jax.process_count()``).

Tasks: ``teacher`` (synthetic), ``bytes`` (text files, experiments/text.py), ``tokens``
(nanoGPT .bin files, experiments/tokens.py), and image classification (experiments/images.py)
on ``fashion_mnist`` (Debian IDX files, offline) or the tfds datasets ``cifar10``,
``cifar100``, ``imagenet2012`` (experiments/tfds_data.py).
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections

TASKS = ("teacher", "bytes", "tokens", "fashion_mnist", "cifar10", "cifar100", "imagenet2012")


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
    batch = self._sample(jax.random.fold_in(jax.random.key(self.seed + 2), step), self.batch_size)
    return host_rows(batch)

  def eval_batches(self):
    return [host_rows(self._sample(jax.random.key(self.seed + 3), self.eval_examples))]


def host_slice(n: int) -> slice:
  """This host's rows of a global batch of ``n`` rows (all of them on one host)."""
  index, count = jax.process_index(), jax.process_count()
  if n % count:
    raise DataError(f"a global batch of {n} rows does not split over {count} hosts; "
                    f"use a multiple of {count}")
  return slice(index * (n // count), (index + 1) * (n // count))


def host_rows(batch: dict) -> dict:
  rows = host_slice(len(next(iter(batch.values()))))
  return {k: v[rows] for k, v in batch.items()}


def prefetch(make_batch: Callable[[int], dict], steps: range, depth: int = 2
             ) -> Iterator[tuple[int, dict]]:
  """(step, make_batch(step)) for each step, the next ``depth`` batches built by a background
  thread while the device runs the current step (reading, augmenting and transferring overlap
  with compute). Close the generator to stop early; unstarted batches are dropped."""
  steps = iter(steps)
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:
    queue = collections.deque()
    try:
      while True:
        while len(queue) <= depth and (step := next(steps, None)) is not None:
          queue.append((step, pool.submit(make_batch, step)))
        if not queue:
          return
        step, batch = queue.popleft()
        yield step, batch.result()
    finally:
      pool.shutdown(cancel_futures=True)


def _teacher(weights, x_BxI):
  h = x_BxI
  for w in weights[:-1]:
    h = jax.nn.relu(h @ w)
  return h @ weights[-1]


def make(cfg: ml_collections.ConfigDict, batch_size: int, seed: int):
  """The task named ``cfg.name``."""
  seed = seed + cfg.get("seed_offset", 0)
  if cfg.name == "teacher":
    return TeacherStudent(cfg.d_in, cfg.d_out, cfg.width, cfg.depth, seed=seed,
                          batch_size=batch_size, eval_examples=cfg.eval_examples)
  if cfg.name == "bytes":
    from experiments.text import byte_text
    return byte_text(cfg.dir, cfg.pattern, cfg.seq_len, seed=seed, batch_size=batch_size,
                     max_bytes=cfg.max_bytes, eval_batches=cfg.eval_batches)
  if cfg.name == "tokens":
    from experiments import tokens
    train, val, bytes_per_token = tokens.load_bins(cfg.dir, cfg.vocab)
    return tokens.TokenWindows(train, val, cfg.vocab, cfg.seq_len, seed=seed,
                               batch_size=batch_size, eval_batches=cfg.eval_batches,
                               bytes_per_token=bytes_per_token)
  if cfg.name in TASKS[3:]:
    return _images(cfg, batch_size, seed)
  raise DataError(f"data.name='{cfg.name}' is unknown; valid: {list(TASKS)}")


IMAGE_SOURCES = ("tfds", "idx")


def _images(cfg: ml_collections.ConfigDict, batch_size: int, seed: int):
  """``data.source``: 'tfds' (array_record via tfds.data_source) or 'idx' (fashion_mnist only:
  the Debian package's IDX files); default 'idx' for fashion_mnist, else 'tfds'."""
  from experiments import images, tfds_data
  train_split, eval_split, classes, mean, std = tfds_data.DATASETS[cfg.name]
  source = cfg.get("source", "idx" if cfg.name == "fashion_mnist" else "tfds")
  if source not in IMAGE_SOURCES or (source == "idx" and cfg.name != "fashion_mnist"):
    raise DataError(f"data.source='{source}' is not valid for data.name='{cfg.name}'; valid: "
                    f"{['tfds', 'idx'] if cfg.name == 'fashion_mnist' else ['tfds']} "
                    "('idx' reads Fashion-MNIST's IDX files)")
  if source == "idx":
    train, test = images.load_fashion_mnist(cfg.dir or images.FASHION_MNIST)
  else:
    train, test = (tfds_data.open_split(cfg.name, s, cfg.dir) for s in (train_split, eval_split))
  return images.ImageClassification(
      train, test, classes=classes, mean=mean, std=std, seed=seed, batch_size=batch_size,
      image_size=cfg.get("image_size", 0), crop_pad=cfg.get("crop", 0),
      flip=cfg.get("flip", False), mixup_alpha=cfg.get("mixup_alpha", 0.0),
      label_smoothing=cfg.get("label_smoothing", 0.0), eval_batch=cfg.get("eval_batch", 1000),
      eval_examples=cfg.get("eval_examples", 0), read_threads=cfg.get("read_threads", 16))
