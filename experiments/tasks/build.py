"""The typed data sections, one per task, and ``make``: the task a data section names."""

from __future__ import annotations

import dataclasses

from experiments.errors import DataError
from experiments.tasks.synthetic import TeacherStudent

IMAGE_SOURCES = ("tfds", "idx")


@dataclasses.dataclass(frozen=True)
class TeacherData:
  """The synthetic teacher-student regression: input/output dims and the teacher's shape."""
  name: str
  d_in: int
  d_out: int
  width: int
  depth: int
  eval_examples: int
  seed_offset: int


@dataclasses.dataclass(frozen=True)
class BytesData:
  """Byte-level text of files matching ``pattern`` under ``dir`` ('' = Python's stdlib)."""
  name: str
  dir: str
  pattern: str
  seq_len: int
  max_bytes: int
  eval_batches: int
  seed_offset: int


@dataclasses.dataclass(frozen=True)
class TokensData:
  """nanoGPT token files ``train.bin``/``val.bin`` under ``dir``."""
  name: str
  dir: str
  vocab: int
  seq_len: int
  eval_batches: int
  seed_offset: int


@dataclasses.dataclass(frozen=True)
class ImageData:
  """Image classification: ``source`` 'tfds' (array_record) or 'idx' (Fashion-MNIST's IDX
  files), resize, augmentations (pad-and-crop, flip, mixup, label smoothing), eval batching."""
  name: str
  source: str
  dir: str
  image_size: int
  crop: int
  flip: bool
  mixup_alpha: float
  label_smoothing: float
  eval_batch: int
  eval_examples: int
  read_threads: int
  seed_offset: int

  def __post_init__(self):
    if self.source not in IMAGE_SOURCES or (self.source == "idx" and self.name != "fashion_mnist"):
      raise DataError(f"data.source='{self.source}' is not valid for data.name='{self.name}'; valid: "
                      f"{['tfds', 'idx'] if self.name == 'fashion_mnist' else ['tfds']} "
                      "('idx' reads Fashion-MNIST's IDX files)")


DATA_SECTIONS = {"teacher": TeacherData, "bytes": BytesData, "tokens": TokensData,
                 "fashion_mnist": ImageData, "cifar10": ImageData, "cifar100": ImageData,
                 "imagenet2012": ImageData}
TASKS = tuple(DATA_SECTIONS)


def make(cfg, batch_size: int, seed: int):
  """The task of a typed data section (a value of ``DATA_SECTIONS``)."""
  seed = seed + cfg.seed_offset
  if isinstance(cfg, TeacherData):
    return TeacherStudent(cfg.d_in, cfg.d_out, cfg.width, cfg.depth, seed=seed,
                          batch_size=batch_size, eval_examples=cfg.eval_examples)
  if isinstance(cfg, BytesData):
    from experiments.tasks.text import byte_text
    return byte_text(cfg.dir, cfg.pattern, cfg.seq_len, seed=seed, batch_size=batch_size,
                     max_bytes=cfg.max_bytes, eval_batches=cfg.eval_batches)
  if isinstance(cfg, TokensData):
    from experiments.tasks import tokens
    train, val, bytes_per_token = tokens.load_bins(cfg.dir, cfg.vocab)
    return tokens.TokenWindows(train, val, cfg.vocab, cfg.seq_len, seed=seed,
                               batch_size=batch_size, eval_batches=cfg.eval_batches,
                               bytes_per_token=bytes_per_token)
  return _images(cfg, batch_size, seed)


def _images(cfg: ImageData, batch_size: int, seed: int):
  from experiments.tasks import images, tfds_data
  train_split, eval_split, classes, mean, std = tfds_data.DATASETS[cfg.name]
  if cfg.source == "idx":
    train, test = images.load_fashion_mnist(cfg.dir or images.FASHION_MNIST)
  else:
    train, test = (tfds_data.open_split(cfg.name, s, cfg.dir) for s in (train_split, eval_split))
  return images.ImageClassification(
      train, test, classes=classes, mean=mean, std=std, seed=seed, batch_size=batch_size,
      image_size=cfg.image_size, crop_pad=cfg.crop, flip=cfg.flip, mixup_alpha=cfg.mixup_alpha,
      label_smoothing=cfg.label_smoothing, eval_batch=cfg.eval_batch,
      eval_examples=cfg.eval_examples, read_threads=cfg.read_threads)
