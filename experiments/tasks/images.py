"""Image classification: Fashion-MNIST (Debian IDX files) or a tfds dataset, with the recipes'
augmentations.

Sampling: grain shuffles the record indices with the seed and reshuffles every epoch; the
global batch of step s is positions [s B, (s+1) B) of that sequence, and a host reads only its
own rows of it (``jax.process_index``), so every batch is a pure function of (seed, step) and
the global batch does not depend on the number of hosts. Augmentation randomness is drawn for
the global batch from ``np.random.default_rng([seed, step])``; mixup pairs images within the
host's rows.

Batches: x [B, H, W, C] float32 normalized per channel; y int labels, or soft targets
[B, classes] (summing to 1) when mixup or label smoothing is on.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import os

import grain
import numpy as np

from experiments.errors import DataError
from experiments.tasks.rows import host_slice

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str) -> np.ndarray:
  """An IDX file (the MNIST format), gzipped, as a uint8 array."""
  with gzip.open(path, "rb") as f:
    blob = f.read()
  ndim = blob[3]
  shape = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  return np.frombuffer(blob, np.uint8, offset=4 + 4 * ndim).reshape(shape)


class ArrayImages:
  """In-memory images [N, H, W, C] uint8 and labels [N]: a random-access source."""

  def __init__(self, images_NxHxWxC: np.ndarray, labels_N: np.ndarray):
    self.images, self.labels = images_NxHxWxC, labels_N.astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict:
    return {"image": self.images[i], "label": self.labels[i]}


def load_fashion_mnist(root: str) -> tuple[ArrayImages, ArrayImages]:
  """(train, test) sources from the four IDX files under ``root``."""
  paths = {(s, k): os.path.join(root, f"{p}-{k}-idx{3 if k == 'images' else 1}-ubyte.gz")
           for s, p in (("train", "train"), ("test", "t10k")) for k in ("images", "labels")}
  missing = [p for p in paths.values() if not os.path.exists(p)]
  if missing:
    raise DataError(f"Fashion-MNIST not found: looked for {missing}; install it with "
                    "`apt-get install dataset-fashion-mnist` (or `make data`), or set data.dir "
                    "to a folder with the four IDX .gz files")
  return tuple(ArrayImages(read_idx(paths[s, "images"])[..., None], read_idx(paths[s, "labels"]))
               for s in ("train", "test"))


def fit(image_HxWxC: np.ndarray, size: int) -> np.ndarray:
  """Resize so the shorter side is ``size`` (bilinear, antialiased), then center-crop to
  size x size: the usual ImageNet eval transform; a no-op for images already that size."""
  h, w = image_HxWxC.shape[:2]
  if (h, w) == (size, size):
    return image_HxWxC
  from PIL import Image
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  channels = image_HxWxC.shape[2]
  pil = Image.fromarray(image_HxWxC[..., 0] if channels == 1 else image_HxWxC)
  out = np.asarray(pil.resize((nw, nh), Image.BILINEAR)).reshape(nh, nw, channels)
  top, left = (nh - size) // 2, (nw - size) // 2
  return out[top:top + size, left:left + size]


# --- augmentations: pure numpy functions of the batch and their random draws ---------------

def crop(images_BxHxWxC: np.ndarray, pad: int, offsets_Bx2: np.ndarray) -> np.ndarray:
  """Zero-pad by ``pad`` on each side, then cut the H x W window at (row, col) offsets."""
  b, h, w, _ = images_BxHxWxC.shape
  padded = np.pad(images_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  rows = offsets_Bx2[:, :1] + np.arange(h)[None]
  cols = offsets_Bx2[:, 1:] + np.arange(w)[None]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def flip(images_BxHxWxC: np.ndarray, mirror_B: np.ndarray) -> np.ndarray:
  """Left-right mirror of the images where ``mirror_B``."""
  return np.where(mirror_B[:, None, None, None], images_BxHxWxC[:, :, ::-1], images_BxHxWxC)


def soft_labels(labels_B: np.ndarray, classes: int, smoothing: float) -> np.ndarray:
  """One-hot targets with label smoothing: 1 - s + s / classes on the label, s / classes elsewhere."""
  one_hot = np.eye(classes, dtype=np.float32)[labels_B]
  return one_hot * (1.0 - smoothing) + smoothing / classes


def mixup(x_BxHxWxC: np.ndarray, y_BxK: np.ndarray, lam: float, partner_B: np.ndarray):
  """Row i becomes lam * row i + (1 - lam) * row partner[i], for images and targets alike."""
  return (lam * x_BxHxWxC + (1 - lam) * x_BxHxWxC[partner_B]).astype(np.float32), \
         (lam * y_BxK + (1 - lam) * y_BxK[partner_B]).astype(np.float32)


class ImageClassification:
  """The image task: ``train_batch(step)`` and ``eval_batches()`` of this host's rows."""

  loss = "xent"
  tokens_per_example = 1

  def __init__(self, train, test, *, classes: int, mean, std, seed: int, batch_size: int,
               image_size: int, crop_pad: int, flip: bool, mixup_alpha: float,
               label_smoothing: float, eval_batch: int, eval_examples: int, read_threads: int):
    self.train, self.test, self.classes, self.seed = train, test, classes, seed
    self.rows, self.eval_rows = host_slice(batch_size), host_slice(eval_batch)
    self.batch_size, self.eval_batch = batch_size, eval_batch
    self.size = image_size or train[0]["image"].shape[0]
    channels = train[0]["image"].shape[-1]
    self.image_shape = (self.size, self.size, channels)
    self.mean = np.asarray(mean, np.float32) * 255
    self.std = np.asarray(std, np.float32) * 255
    self.crop_pad, self.flip, self.mixup_alpha, self.smoothing = crop_pad, flip, mixup_alpha, label_smoothing
    self.spec = {"image_shape": self.image_shape, "d_in": int(np.prod(self.image_shape)),
                 "d_out": classes}
    self.order = grain.MapDataset.range(len(train)).seed(seed).shuffle().repeat()
    self.n_eval = min(len(test), eval_examples or len(test)) // eval_batch * eval_batch
    if not self.n_eval:
      raise DataError(f"the eval split has {len(test)} examples, fewer than data.eval_batch={eval_batch}")
    self.pool = concurrent.futures.ThreadPoolExecutor(read_threads) if read_threads > 1 else None

  def _read(self, source, idx) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, size, size, C] uint8 and int32 labels of records ``idx``."""
    if isinstance(source, ArrayImages) and source.images.shape[1:3] == (self.size, self.size):
      return source.images[idx], source.labels[idx]
    def load(i):   # decoding (PIL) and resizing release the GIL: threads help
      record = source[int(i)]
      return fit(record["image"], self.size), record["label"]
    images, labels = zip(*(self.pool.map(load, idx) if self.pool else map(load, idx)))
    return np.stack(images), np.asarray(labels, np.int32)

  def _normalize(self, images) -> np.ndarray:
    return ((images - self.mean) / self.std).astype(np.float32)

  def train_batch(self, step: int) -> dict:
    rows = self.rows
    start = step * self.batch_size
    idx = np.asarray([self.order[start + i] for i in range(rows.start, rows.stop)])
    images, labels = self._read(self.train, idx)
    rng = np.random.default_rng([self.seed, step])
    if self.crop_pad:
      offsets = rng.integers(0, 2 * self.crop_pad + 1, (self.batch_size, 2))[rows]
      images = crop(images, self.crop_pad, offsets)
    if self.flip:
      images = flip(images, rng.random(self.batch_size)[rows] < 0.5)
    x = self._normalize(images)
    if not (self.mixup_alpha or self.smoothing):
      return {"x": x, "y": labels}
    y = soft_labels(labels, self.classes, self.smoothing)
    if self.mixup_alpha:
      lam = rng.beta(self.mixup_alpha, self.mixup_alpha)
      x, y = mixup(x, y, lam, rng.permutation(len(labels)))
    return {"x": x, "y": y}

  def eval_batches(self):
    """The first ``n_eval`` test examples in order, ``eval_batch`` at a time (a generator)."""
    rows = self.eval_rows
    for start in range(0, self.n_eval, self.eval_batch):
      images, labels = self._read(self.test, np.arange(start + rows.start, start + rows.stop))
      yield {"x": self._normalize(images), "y": labels}
