"""Image classification data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` IDX files.

Images become float vectors in [0, 1] shifted to zero mean; a training batch is drawn from
(seed, step) (so resumption is exact) and optionally flipped left-right; evaluation covers the
whole test split.
"""

from __future__ import annotations

import gzip
import os

import jax
import numpy as np

from experiments.data import DataError

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str) -> np.ndarray:
  """An IDX file (the MNIST format), gzipped, as a uint8 array."""
  with gzip.open(path, "rb") as f:
    blob = f.read()
  ndim = blob[3]
  shape = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  return np.frombuffer(blob, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(root: str):
  names = {"train": "train", "test": "t10k"}
  paths = {f"{s}_{k}": os.path.join(root, f"{p}-{k}-idx{3 if k == 'images' else 1}-ubyte.gz")
           for s, p in names.items() for k in ("images", "labels")}
  missing = [p for p in paths.values() if not os.path.exists(p)]
  if missing:
    raise DataError(f"Fashion-MNIST not found: looked for {missing}; install it with "
                    "`apt-get install dataset-fashion-mnist` (or `make data`), or set data.dir "
                    "to a folder with the four IDX .gz files")
  return {k: read_idx(p) for k, p in paths.items()}


class ImageClassification:
  loss = "xent"
  tokens_per_example = 1

  def __init__(self, root: str, *, seed: int, batch_size: int, flip: bool, eval_batch: int = 2000):
    arrays = load_fashion_mnist(root or FASHION_MNIST)
    mean = arrays["train_images"].mean() / 255.0
    self.train_x = arrays["train_images"].reshape(len(arrays["train_images"]), -1) / 255.0 - mean
    self.test_x = arrays["test_images"].reshape(len(arrays["test_images"]), -1) / 255.0 - mean
    self.train_y, self.test_y = arrays["train_labels"].astype(np.int32), arrays["test_labels"].astype(np.int32)
    self.image_shape = arrays["train_images"].shape[1:]
    self.seed, self.batch_size, self.flip, self.eval_batch = seed, batch_size, flip, eval_batch
    self.spec = {"d_in": self.train_x.shape[1], "d_out": int(self.train_y.max()) + 1}

  def train_batch(self, step: int) -> dict:
    key = jax.random.fold_in(jax.random.key(self.seed), step)
    idx_key, flip_key = jax.random.split(key)
    idx = np.asarray(jax.random.randint(idx_key, (self.batch_size,), 0, len(self.train_y)))
    x = self.train_x[idx].astype(np.float32)
    if self.flip:
      flips = np.asarray(jax.random.bernoulli(flip_key, 0.5, (self.batch_size,)))
      images = x.reshape(-1, *self.image_shape)
      x = np.where(flips[:, None, None], images[:, :, ::-1], images).reshape(self.batch_size, -1)
    return {"x": x, "y": self.train_y[idx]}

  def eval_batches(self) -> list[dict]:
    return [{"x": self.test_x[i:i + self.eval_batch].astype(np.float32),
             "y": self.test_y[i:i + self.eval_batch]}
            for i in range(0, len(self.test_y), self.eval_batch)]
