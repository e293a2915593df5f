"""Image pipelines: augmentations do what they say, batches are pure functions of (seed, step),
hosts read disjoint rows of the same global batch, missing data is one clear error."""

import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common
from experiments import errors
from experiments.tasks import build as data, images, tfds_data


def _data(**fields) -> data.ImageData:
  """A typed image data section: configs/common.py's defaults with ``fields`` over them."""
  name = fields.pop("name", "cifar10")
  return data.ImageData(**{**common.image_data(name).to_dict(), **fields})


def _task(batch_size=8, **fields):
  cfg = _data(**{**dict(image_size=32, crop=4, flip=True, eval_batch=8, eval_examples=16,
                        read_threads=1), **fields})
  with tfds.testing.mock_data(num_examples=24):
    return data.make(cfg, batch_size, seed=0)


def test_flip_mirrors_and_crop_shifts():
  x = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
  flipped = images.flip(x, np.array([True, False]))
  np.testing.assert_array_equal(flipped[0], x[0, :, ::-1])
  np.testing.assert_array_equal(flipped[1], x[1])
  cropped = images.crop(x, 2, np.array([[2, 2], [0, 4]]))
  assert cropped.shape == x.shape
  np.testing.assert_array_equal(cropped[0], x[0])                  # centred window: unchanged
  np.testing.assert_array_equal(cropped[1, 2:, :3], x[1, :2, 2:])  # moved down 2, left 2
  assert not cropped[1, :2].any() and not cropped[1, :, 3:].any()  # zero padding came in


def test_label_smoothing_sums_to_one():
  y = images.soft_labels(np.array([3, 0]), 10, 0.3)
  np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(y[0, 3], 0.7 + 0.03)
  np.testing.assert_allclose(y[1, 1:], 0.03)


def test_mixup_mixes_images_and_labels_of_the_same_pair():
  plain = _task(batch_size=8).train_batch(5)
  mixed = _task(batch_size=8, mixup_alpha=0.8).train_batch(5)
  x, y = plain["x"].reshape(8, -1), np.eye(10)[plain["y"]]
  xm = mixed["x"].reshape(8, -1)
  np.testing.assert_allclose(mixed["y"].sum(1), 1.0, rtol=1e-6)
  lams, partners = [], []
  for i in range(8):   # the partner j and lam that explain row i exactly
    fits = []
    for j in range(8):
      d = x[i] - x[j]
      lam = 1.0 if not d.any() else float((xm[i] - x[j]) @ d / (d @ d))
      fits.append((np.abs(xm[i] - lam * x[i] - (1 - lam) * x[j]).max(), j, lam))
    err, j, lam = min(fits)
    assert err < 1e-4
    np.testing.assert_allclose(mixed["y"][i], lam * y[i] + (1 - lam) * y[j], atol=1e-5)
    lams.append(lam)
    partners.append(j)
  assert np.ptp(lams) < 1e-4 and 0 < lams[0] < 1   # one lam per batch
  assert sorted(partners) == list(range(8))         # the partners are a permutation


def test_batches_are_a_pure_function_of_seed_and_step():
  a, b = _task(), _task()
  np.testing.assert_array_equal(a.train_batch(3)["x"], b.train_batch(3)["x"])
  assert not np.array_equal(a.train_batch(3)["x"], a.train_batch(4)["x"])
  evals = list(a.eval_batches())
  assert len(evals) == 2 and evals[0]["x"].shape == (8, 32, 32, 3)
  # an epoch (24 records, batch 8: 3 steps) visits every record once; the next is reshuffled
  epoch = [a.order[i] for i in range(24)]
  assert sorted(epoch) == list(range(24))
  assert [a.order[i] for i in range(24, 48)] != epoch


def test_hosts_read_disjoint_rows_of_the_global_batch(monkeypatch):
  whole = _task(mixup_alpha=0.0).train_batch(2)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  parts = []
  for host in range(2):
    monkeypatch.setattr(jax, "process_index", lambda host=host: host)
    parts.append(_task().train_batch(2))
  assert not np.array_equal(parts[0]["x"], parts[1]["x"])
  for key in ("x", "y"):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_imagenet_images_are_resized_and_center_cropped():
  task = _task(name="imagenet2012", image_size=16, crop=0)   # mock images have random sizes
  assert task.spec == {"image_shape": (16, 16, 3), "d_in": 768, "d_out": 1000}
  assert task.train_batch(0)["x"].shape == (8, 16, 16, 3)
  wide = np.zeros((20, 40, 3), np.uint8)
  wide[:, 10:30] = 255   # the centre 20 x 20 square is white: a center crop keeps only it
  out = images.fit(wide, 10)
  assert out.shape == (10, 10, 3) and (out[:, 1:-1] == 255).all()   # edges: bilinear blur


class _LocalCifar10(tfds.image_classification.Cifar10, skip_registration=True):
  """cifar10 built from PNG files written here (tfds encodes arrays only with TensorFlow)."""
  name = "cifar10"

  def _split_generators(self, dl_manager):
    return {"train": self._examples(40, "train"), "test": self._examples(16, "test")}

  def _examples(self, n, split):
    from PIL import Image
    for i, (image, label) in enumerate(zip(*_local_arrays(n))):
      path = os.path.join(self._data_dir_root, f"{split}{i}.png")
      Image.fromarray(image).save(path)
      yield i, {"id": f"{split}{i}", "image": path, "label": label}


def _local_arrays(n):
  rng = np.random.default_rng(n)
  return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


def test_reads_a_locally_built_array_record_dataset(tmp_path):
  _LocalCifar10(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  cfg = _data(dir=str(tmp_path), crop=0, flip=False, eval_batch=8, read_threads=2)
  task = data.make(cfg, 8, seed=0)
  originals = dict(zip(map(bytes, _local_arrays(16)[0]), _local_arrays(16)[1]))
  mean, std = np.array(tfds_data.DATASETS["cifar10"][3]), np.array(tfds_data.DATASETS["cifar10"][4])
  seen = []
  for batch in task.eval_batches():   # tfds shuffles records on write: match images, not order
    for x, y in zip(batch["x"], batch["y"]):
      pixels = np.round((x * std + mean) * 255).astype(np.uint8)
      assert originals[bytes(pixels)] == y
      seen.append(bytes(pixels))
  assert len(set(seen)) == 16
  assert task.train_batch(0)["x"].shape == (8, 32, 32, 3)


def test_fashion_mnist_reads_from_tfds_or_idx_files(tmp_path):
  task = _task(name="fashion_mnist", source="tfds", image_size=0, crop=0, flip=False)
  assert task.train_batch(0)["x"].shape == (8, 28, 28, 1)   # tfds's (mocked) records
  with pytest.raises(errors.DataError, match=f"Fashion-MNIST not found: looked for .*{tmp_path}"):
    _task(name="fashion_mnist", source="idx", dir=str(tmp_path))
  with pytest.raises(errors.DataError, match=r"data.source='idx' is not valid for data.name='cifar10'"
                                           r"; valid: \['tfds'\]"):
    _task(source="idx")
  with pytest.raises(errors.DataError, match=r"data.source='tfrecord' .*valid: \['tfds', 'idx'\]"):
    _task(name="fashion_mnist", source="tfrecord")


def test_missing_tfds_dataset_is_one_clear_error(tmp_path):
  with pytest.raises(errors.DataError, match=f"cifar100.*{tmp_path}.*tfds build cifar100"):
    data.make(_data(name="cifar100", dir=str(tmp_path)), 8, seed=0)
  with pytest.raises(errors.DataError, match="downloads/manual"):
    data.make(_data(name="imagenet2012", dir=str(tmp_path)), 8, seed=0)


def test_soft_target_cross_entropy_matches_the_closed_form():
  from experiments.train import step
  logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  labels = np.array([1, 5, 0, 9])
  smooth = images.soft_labels(labels, 10, 0.3)
  np.testing.assert_allclose(step.xent(logits, labels), -log_p[np.arange(4), labels].mean(), rtol=1e-5)
  np.testing.assert_allclose(step.xent(logits, smooth), -(smooth * log_p).sum(1).mean(), rtol=1e-5)
