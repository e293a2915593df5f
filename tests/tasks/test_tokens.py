"""Token windows on nanoGPT .bin files, the OpenWebText preparation script, and the
byte-level corpus split."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import errors
from experiments.tasks import build as data, text

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import prepare_owt  # noqa: E402


def _bins(root, n_train=5000, n_val=1000, vocab=50257):
  for split, n, offset in (("train", n_train, 0), ("val", n_val, 7)):
    ((np.arange(n) + offset) % vocab).astype(np.uint16).tofile(os.path.join(root, f"{split}.bin"))


def _tokens(root, batch_size=8, vocab=50304):
  cfg = data.TokensData(name="tokens", dir=str(root), vocab=vocab, seq_len=16, eval_batches=2,
                        seed_offset=0)
  return data.make(cfg, batch_size, seed=0)


def test_token_windows_are_shifted_file_slices(tmp_path):
  _bins(tmp_path)
  task = _tokens(tmp_path)
  assert task.spec == {"vocab": 50304, "seq_len": 16} and task.tokens_per_example == 16
  batch = task.train_batch(3)
  x, y = batch["x"], batch["y"]
  assert x.shape == y.shape == (8, 16)
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])                  # next-token targets
  np.testing.assert_array_equal(np.diff(x, axis=1), 1)                # contiguous: file is arange
  np.testing.assert_array_equal(_tokens(tmp_path).train_batch(3)["x"], x)   # pure in (seed, step)
  assert not np.array_equal(task.train_batch(4)["x"], x)
  val = task.eval_batches()
  assert len(val) == 2 and (val[0]["x"][:, 0] >= 7).all()             # from val.bin
  assert task.bytes_per_token is None   # no meta.json: bits per token only


def test_hosts_get_disjoint_rows_of_the_global_token_batch(tmp_path, monkeypatch):
  _bins(tmp_path)
  whole = _tokens(tmp_path).train_batch(1)["x"]
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  parts = []
  for host in range(2):
    monkeypatch.setattr(jax, "process_index", lambda host=host: host)
    parts.append(_tokens(tmp_path).train_batch(1)["x"])
  assert parts[0].shape == (4, 16) and not np.array_equal(parts[0], parts[1])
  np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_missing_or_mismatched_token_files_are_clear_errors(tmp_path):
  with pytest.raises(errors.DataError, match=f"{tmp_path}/train.bin.*prepare_owt.py"):
    _tokens(tmp_path)
  _bins(tmp_path)
  (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 50257}))
  with pytest.raises(errors.DataError, match="data.vocab=256 is smaller than the tokenizer's vocab 50257"):
    _tokens(tmp_path, vocab=256)


def _byte_encoding():
  """An offline tiktoken encoding: one token per byte plus <|endoftext|> (id 256)."""
  import tiktoken
  return tiktoken.Encoding("bytes", pat_str=r"\S+|\s+", mergeable_ranks={bytes([i]): i for i in range(256)},
                           special_tokens={"<|endoftext|>": 256})


def _text_dir(root):
  docs = {f"doc{i}.txt": f"document {i}: " + "héllo wörld " * (i + 1) for i in range(40)}
  for name, body in docs.items():
    (root / name).write_text(body, encoding="utf-8")
  return docs


def test_prepare_owt_writes_documents_and_eot_in_the_nanogpt_layout(tmp_path):
  pytest.importorskip("tiktoken")
  (tmp_path / "text").mkdir()
  docs = _text_dir(tmp_path / "text")
  enc = _byte_encoding()
  meta = prepare_owt.prepare(prepare_owt.text_files(str(tmp_path / "text")), str(tmp_path / "out"),
                             enc, val_fraction=0.2)
  for split in ("train", "val"):
    names = sorted(n for n in docs if prepare_owt.is_validation(n, 0.2) == (split == "val"))
    assert names, f"the fixture should put documents in {split}"
    ids = np.fromfile(tmp_path / "out" / f"{split}.bin", np.uint16)
    assert meta["tokens"][split] == len(ids) and meta["documents"][split] == len(names)
    assert enc.decode(ids.tolist()) == "".join(docs[n] + "<|endoftext|>" for n in names)
    assert meta["bytes"][split] == sum(len(docs[n].encode()) for n in names)
  assert json.loads((tmp_path / "out" / "meta.json").read_text())["vocab_size"] == 257
  task = _tokens(tmp_path / "out", vocab=257)   # bits per byte = bits per token / bytes per token
  val_docs = [n for n in docs if prepare_owt.is_validation(n, 0.2)]   # byte tokens + one EOT each
  assert task.bytes_per_token == meta["bytes"]["val"] / (meta["bytes"]["val"] + len(val_docs))


def test_prepare_owt_with_gpt2_bpe(tmp_path):
  tiktoken = pytest.importorskip("tiktoken")
  try:
    tiktoken.get_encoding("gpt2")
  except Exception as e:   # the BPE files are downloaded once, then cached
    pytest.skip(f"GPT-2 BPE files not cached and no internet ({type(e).__name__})")
  (tmp_path / "text").mkdir()
  _text_dir(tmp_path / "text")
  out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "prepare_owt.py"),
                        "--out", str(tmp_path / "out"), "--text_dir", str(tmp_path / "text"),
                        "--val_fraction", "0.2"], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert json.loads((tmp_path / "out" / "meta.json").read_text())["vocab_size"] == 50257
  task = _tokens(tmp_path / "out", batch_size=2)
  assert task.train_batch(0)["x"].max() < 50257


def test_byte_corpus_splits_by_file(tmp_path):
  bodies = {f"f{i:02d}.py": bytes([65 + i % 26]) * 5000 for i in range(30)}
  for name, body in bodies.items():
    (tmp_path / name).write_bytes(body)
  val_names = sorted(n for n in bodies if text.is_validation(n))
  assert 0 < len(val_names) < len(bodies)
  train, val = text.read_corpus(str(tmp_path), "*.py", max_bytes=10**6, val_every=20)
  assert val.tobytes() == b"".join(bodies[n] for n in val_names)
  assert len(train) + len(val) == 5000 * len(bodies)
  extra = next(f"new{i}.py" for i in range(100) if not text.is_validation(f"new{i}.py"))
  (tmp_path / extra).write_bytes(b"z" * 5000)   # a new training file moves no other file
  assert text.read_corpus(str(tmp_path), "*.py", max_bytes=10**6)[1].tobytes() == val.tobytes()
