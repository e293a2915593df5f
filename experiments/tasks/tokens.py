"""Language modelling on a token stream: random windows of a 1-D token array.

``TokenWindows`` serves any stream (bytes of text files, or GPT-2 BPE tokens); ``load_bins``
opens token files in the nanoGPT layout: ``train.bin`` / ``val.bin``, uint16, read as
``np.memmap`` so a 9B-token OpenWebText costs no memory and a batch reads only its windows
(``scripts/prepare_owt.py`` writes them, with a ``meta.json`` naming the tokenizer).

A training batch is ``batch_size`` windows of ``seq_len + 1`` tokens at offsets drawn from
(seed, step) for the global batch; a host reads only its own rows (``jax.process_index``), so
the global batch is a pure function of (seed, step) whatever the number of hosts, and a
resumed run sees exactly the data it would have seen. Validation uses fixed windows.

Eval reports bits per token; with ``bytes_per_token`` (1 for byte-level text; for BPE files, the
validation text's UTF-8 bytes over its tokens, from ``meta.json``) also bits per byte, the
tokenizer-independent number.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from experiments.errors import DataError
from experiments.tasks.rows import host_slice


class TokenWindows:
  loss = "lm"

  def __init__(self, train_N: np.ndarray, val_N: np.ndarray, vocab: int, seq_len: int, *,
               seed: int, batch_size: int, eval_batches: int,
               bytes_per_token: float | None = None):
    if min(len(train_N), len(val_N)) <= seq_len + 1:
      raise DataError(f"data.seq_len={seq_len} is longer than a split ({len(train_N)} train, "
                      f"{len(val_N)} validation tokens)")
    self.train, self.val = train_N, val_N
    self.seq_len, self.seed, self.batch_size, self.n_eval = seq_len, seed, batch_size, eval_batches
    self.spec = {"vocab": vocab, "seq_len": seq_len}
    self.tokens_per_example = seq_len
    self.bytes_per_token = bytes_per_token
    self.rows = host_slice(batch_size)

  def _windows(self, corpus: np.ndarray, key) -> dict:
    starts = np.asarray(jax.random.randint(key, (self.batch_size,), 0, len(corpus) - self.seq_len - 1))
    starts = starts[self.rows]
    window = corpus[starts[:, None] + np.arange(self.seq_len + 1)[None]].astype(np.int32)
    return {"x": window[:, :-1], "y": window[:, 1:]}

  def train_batch(self, step: int) -> dict:
    return self._windows(self.train, jax.random.fold_in(jax.random.key(self.seed), step))

  def eval_batches(self) -> list[dict]:
    key = jax.random.key(self.seed + 1)
    return [self._windows(self.val, jax.random.fold_in(key, i)) for i in range(self.n_eval)]


def load_bins(root: str, vocab: int) -> tuple[np.ndarray, np.ndarray, float | None]:
  """(train, val) uint16 memmaps of ``root``/{train,val}.bin and the validation bytes per token
  (None when ``meta.json`` does not record the text's bytes); checks ``meta.json``'s vocab."""
  paths = [os.path.join(root, f"{split}.bin") for split in ("train", "val")]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise DataError(f"token files not found: looked for {missing}; write them with "
                    f"`python scripts/prepare_owt.py --out {root or 'DIR'} [--text_dir DIR]` "
                    "(GPT-2 BPE via tiktoken) and set data.dir")
  meta_path = os.path.join(root, "meta.json")
  meta = {}
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    if meta["vocab_size"] > vocab:
      raise DataError(f"data.vocab={vocab} is smaller than the tokenizer's vocab "
                      f"{meta['vocab_size']} ({meta_path}); set data.vocab >= {meta['vocab_size']}")
  train, val = (np.memmap(p, dtype=np.uint16, mode="r") for p in paths)
  val_bytes, val_tokens = meta.get("bytes", {}).get("val"), meta.get("tokens", {}).get("val")
  return train, val, (val_bytes / val_tokens if val_bytes and val_tokens else None)
