"""Byte-level language modelling on a directory of text files (default: Python's stdlib sources).

Files are split into train / validation by a CRC32 of their path relative to the root, so a
file's split depends on nothing else (the same on any machine, and adding or removing files
never moves another one). Each split is read as bytes (vocab 256) in sorted path order up to
its share of ``max_bytes`` and concatenated; batches are random windows
(``experiments/tokens.py``). Bits per byte = loss / ln 2.
"""

from __future__ import annotations

import glob
import os
import zlib

import numpy as np

from experiments.errors import DataError
from experiments.tasks.tokens import TokenWindows

STDLIB = os.path.dirname(os.__file__)


def is_validation(relpath: str, val_every: int = 20) -> bool:
  """Whether the file at ``relpath`` (relative to the corpus root) is in the validation split."""
  return zlib.crc32(relpath.replace(os.sep, "/").encode()) % val_every == 0


def read_corpus(root: str, pattern: str, max_bytes: int, val_every: int = 20):
  """(train bytes, validation bytes) as uint8 arrays; about 1/``val_every`` of the files, and
  at most ``max_bytes // val_every`` bytes, are validation."""
  files = sorted(glob.glob(os.path.join(root, pattern), recursive=True))
  if not files:
    raise DataError(f"no files matching '{pattern}' under '{root}'; point data.dir at a directory "
                    "of text files (the default is the Python standard library's sources)")
  is_val = [is_validation(os.path.relpath(p, root), val_every) for p in files]
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


def byte_text(root: str, pattern: str, seq_len: int, *, seed: int, batch_size: int,
             max_bytes: int, eval_batches: int) -> TokenWindows:
  """The byte-level task: windows of the corpus under ``root`` (default: the stdlib)."""
  train, val = read_corpus(root or STDLIB, pattern, max_bytes)
  return TokenWindows(train, val, 256, seq_len, seed=seed, batch_size=batch_size,
                      eval_batches=eval_batches, bytes_per_token=1.0)
