"""python scripts/prepare_owt.py --out data/owt [--text_dir DIR] [--val_fraction 0.0005]

Tokenizes text with GPT-2 BPE (tiktoken) into the nanoGPT layout that the ``tokens`` task
reads: ``train.bin`` / ``val.bin`` (uint16 token ids, every document followed by
<|endoftext|>) and ``meta.json`` (tokenizer, vocab size, token and UTF-8 byte counts; the
validation bytes per token turn bits per token into bits per byte). The text is every
``*.txt`` file under ``--text_dir`` (one document a file), or, without it, the Hugging Face
``openwebtext`` dataset (needs the ``datasets`` package and its cached copy or internet).
Documents go to validation by a CRC32 of their name, so the split is the same on any machine.
tiktoken downloads the GPT-2 BPE files once (cached under $TIKTOKEN_CACHE_DIR).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import zlib

import numpy as np


def text_files(root: str):
  """(name, text) of every .txt file under ``root``, in sorted order."""
  for path in sorted(glob.glob(os.path.join(root, "**", "*.txt"), recursive=True)):
    with open(path, encoding="utf-8", errors="replace") as f:
      yield os.path.relpath(path, root), f.read()


def openwebtext():
  """(name, text) of the Hugging Face openwebtext documents."""
  import datasets
  for i, doc in enumerate(datasets.load_dataset("openwebtext", split="train", streaming=True)):
    yield f"owt-{i}", doc["text"]


def is_validation(name: str, val_fraction: float) -> bool:
  return zlib.crc32(name.encode()) / 2**32 < val_fraction


def prepare(documents, out: str, encoding, val_fraction: float) -> dict:
  """Writes train.bin / val.bin / meta.json under ``out``; returns the meta record."""
  if encoding.n_vocab > 2**16:
    raise ValueError(f"encoding '{encoding.name}' has {encoding.n_vocab} tokens; uint16 holds 65536")
  os.makedirs(out, exist_ok=True)
  files = {s: open(os.path.join(out, f"{s}.bin"), "wb") for s in ("train", "val")}
  counts = {"train": 0, "val": 0}
  docs = {"train": 0, "val": 0}
  text_bytes = {"train": 0, "val": 0}
  try:
    for name, text in documents:
      split = "val" if is_validation(name, val_fraction) else "train"
      ids = encoding.encode_ordinary(text) + [encoding.eot_token]
      files[split].write(np.asarray(ids, np.uint16).tobytes())
      counts[split] += len(ids)
      text_bytes[split] += len(text.encode("utf-8"))
      docs[split] += 1
  finally:
    for f in files.values():
      f.close()
  meta = {"tokenizer": encoding.name, "vocab_size": encoding.n_vocab, "dtype": "uint16",
          "tokens": counts, "bytes": text_bytes, "documents": docs}
  with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return meta


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory for train.bin, val.bin, meta.json")
  parser.add_argument("--text_dir", default="", help="tokenize its *.txt files instead of OWT")
  parser.add_argument("--val_fraction", type=float, default=0.0005)
  parser.add_argument("--encoding", default="gpt2", help="a tiktoken encoding name")
  args = parser.parse_args(argv)
  import tiktoken
  encoding = tiktoken.get_encoding(args.encoding)
  documents = text_files(args.text_dir) if args.text_dir else openwebtext()
  meta = prepare(documents, args.out, encoding, args.val_fraction)
  print(json.dumps(meta))


if __name__ == "__main__":
  main()
