"""Image datasets from TensorFlow Datasets, read without TensorFlow.

``tfds.data_source`` opens a prepared ``array_record`` dataset as a random-access sequence of
numpy dicts (``{'image': uint8 [H, W, C], 'label': int}``); the image task reads the records
its sampler picks. Data is never downloaded at run time: a missing dataset is one DataError
that says where it was looked for and the command that builds it.
"""

from __future__ import annotations

import os

from experiments.errors import DataError

# name -> (train split, eval split, classes, mean, std): per-channel statistics of the train
# split in [0, 1] (the usual published values)
DATASETS = {
    "cifar10": ("train", "test", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("train", "test", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ("train", "test", 10, (0.2860,), (0.3530,)),
    "imagenet2012": ("train", "validation", 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def data_dir(root: str) -> str:
  """Where tfds looks: ``root``, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return root or os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def how_to_get(name: str, root: str) -> str:
  build = f"tfds build {name} --data_dir={root} --file_format=array_record"
  if name == "imagenet2012":
    return (f"download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
            f"into {root}/downloads/manual/, then run `{build}` (with TensorFlow installed)")
  return (f"run `{build}` (needs internet once, and TensorFlow to encode the images: "
          f"pip install -e '.[tf]'; reading needs neither) and point data.dir at it")


def open_split(name: str, split: str, root: str):
  """The random-access source of ``name``/``split`` under ``root``; never downloads."""
  if name not in DATASETS:
    raise DataError(f"tfds dataset '{name}' is not supported; valid: {sorted(DATASETS)}")
  import tensorflow_datasets as tfds   # heavy import, only for tfds-backed tasks
  where = data_dir(root)
  try:
    return tfds.data_source(name, split=split, data_dir=where, download=False)
  except Exception as e:   # tfds raises several types (AssertionError, NotImplementedError, ...)
    raise DataError(f"tfds dataset '{name}' split '{split}' not found (or not in array_record "
                    f"format) under data_dir '{where}' ({type(e).__name__}); to get it, "
                    f"{how_to_get(name, where)}") from e
