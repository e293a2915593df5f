"""``make``: the task a data config names."""

from __future__ import annotations

import ml_collections

from experiments.errors import DataError
from experiments.tasks.synthetic import TeacherStudent

TASKS = ("teacher", "bytes", "tokens", "fashion_mnist", "cifar10", "cifar100", "imagenet2012")


def make(cfg: ml_collections.ConfigDict, batch_size: int, seed: int):
  """The task named ``cfg.name``."""
  seed = seed + cfg.get("seed_offset", 0)
  if cfg.name == "teacher":
    return TeacherStudent(cfg.d_in, cfg.d_out, cfg.width, cfg.depth, seed=seed,
                          batch_size=batch_size, eval_examples=cfg.eval_examples)
  if cfg.name == "bytes":
    from experiments.tasks.text import byte_text
    return byte_text(cfg.dir, cfg.pattern, cfg.seq_len, seed=seed, batch_size=batch_size,
                     max_bytes=cfg.max_bytes, eval_batches=cfg.eval_batches)
  if cfg.name == "tokens":
    from experiments.tasks import tokens
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
  from experiments.tasks import images, tfds_data
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
