"""Byte-level language modelling on a directory of text files (default: Python's stdlib sources).

Files are split into train / validation by a hash of their relative path (deterministic on
any machine), read as bytes (vocab 256) and concatenated. A training batch is ``batch_size``
windows of ``seq_len + 1`` bytes at offsets drawn from (seed, step), so a resumed run sees
the same data; validation uses fixed windows. Bits per byte = loss / ln 2.
"""

from __future__ import annotations

import glob
import os
import zlib

import jax
import numpy as np

from experiments.data import DataError

STDLIB = os.path.dirname(os.__file__)


def read_corpus(root: str, pattern: str, max_bytes: int, val_every: int = 20):
  """(train bytes, validation bytes): files whose path hash % val_every == 0 are validation;
  each split reads files in sorted order up to its share of ``max_bytes``."""
  files = sorted(glob.glob(os.path.join(root, pattern), recursive=True))
  if not files:
    raise DataError(f"no files matching '{pattern}' under '{root}'; point data.dir at a directory "
                    "of text files (the default is the Python standard library's sources)")
  is_val = [zlib.crc32(os.path.relpath(p, root).encode()) % val_every == 0 for p in files]
  splits = []
  for want_val, budget in ((False, max_bytes - max_bytes // val_every), (True, max_bytes // val_every)):
    blobs, size = [], 0
    for path, val in zip(files, is_val):
      if val == want_val and size < budget:
        with open(path, "rb") as f:
          blobs.append(f.read())
        size += len(blobs[-1])
    splits.append(np.frombuffer(b"".join(blobs), np.uint8))
  if min(len(s) for s in splits) < 4096:
    raise DataError(f"'{root}' has too little text matching '{pattern}' for a train/validation split")
  return tuple(splits)


class ByteText:
  loss = "lm"

  def __init__(self, root: str, pattern: str, seq_len: int, *, seed: int, batch_size: int,
               max_bytes: int, eval_batches: int):
    self.train, self.val = read_corpus(root or STDLIB, pattern, max_bytes)
    self.seq_len, self.seed, self.batch_size, self.n_eval = seq_len, seed, batch_size, eval_batches
    self.spec = {"vocab": 256, "seq_len": seq_len}
    self.tokens_per_example = seq_len

  def _windows(self, corpus: np.ndarray, key) -> dict:
    starts = np.asarray(jax.random.randint(key, (self.batch_size,), 0, len(corpus) - self.seq_len - 1))
    idx = starts[:, None] + np.arange(self.seq_len + 1)[None]
    window = corpus[idx].astype(np.int32)
    return {"x": window[:, :-1], "y": window[:, 1:]}

  def train_batch(self, step: int) -> dict:
    return self._windows(self.train, jax.random.fold_in(jax.random.key(self.seed), step))

  def eval_batches(self) -> list[dict]:
    key = jax.random.key(self.seed + 1)
    return [self._windows(self.val, jax.random.fold_in(key, i)) for i in range(self.n_eval)]
