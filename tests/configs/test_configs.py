"""The paper-recipe configs: each runlocal variant trains end to end on CPU with a falling
loss (tfds datasets under ``tfds.testing.mock_data``, tokens from a locally written .bin), and
the full variants carry the recipes' numbers."""

import importlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import runfiles
from experiments import config as run_config
from experiments.train import loop as train

CONFIGS = ("mlp_cifar", "vit_cifar", "vit_imagenet", "gpt2_owt")


def _write_tokens(root):
  """A learnable stream: a fixed random sequence of 64 GPT-2 ids, repeated."""
  cycle = np.random.default_rng(0).integers(0, 50257, 64).astype(np.uint16)
  for split, reps in (("train", 300), ("val", 40)):
    np.tile(cycle, reps).tofile(os.path.join(root, f"{split}.bin"))


@pytest.mark.parametrize("name", CONFIGS)
def test_runlocal_trains_with_falling_loss(name, tmp_path):
  config = importlib.import_module(f"configs.{name}").get_config("runlocal")
  if name == "gpt2_owt":
    _write_tokens(tmp_path)
    with config.unlocked():
      config.data.dir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=32):
    last = train.train_and_evaluate(run_config.parse(config), str(tmp_path))
  losses = [r["train_loss"] for r in runfiles.read_metrics(str(tmp_path))]
  assert last["final"] and np.isfinite(last["eval_loss"])
  assert losses[-1] < losses[0], losses


def test_docstrings_start_with_their_command():
  for name in CONFIGS + ("mlp_fashion", "gpt2_bytes"):
    doc = importlib.import_module(f"configs.{name}").__doc__
    assert doc.startswith(f"python -m experiments.main --config configs/{name}.py"), name


def test_full_configs_carry_the_recipes():
  get = lambda name, arg=None: importlib.import_module(f"configs.{name}").get_config(arg)
  mlp = get("mlp_cifar")
  assert (mlp.batch_size, mlp.steps, mlp.optim.lr) == (1024, 500 * 50_000 // 1024, 3e-3)
  assert (mlp.data.mixup_alpha, mlp.data.label_smoothing, mlp.data.crop) == (0.8, 0.3, 4)
  vit = get("vit_cifar")
  assert (vit.data.name, vit.model.depth, vit.model.heads, vit.model.patch) == ("cifar100", 3, 8, 8)
  i1k = get("vit_imagenet")
  assert (i1k.batch_size, i1k.data.image_size, i1k.model.patch, i1k.model.depth) == (3072, 224, 32, 12)
  assert (i1k.optim.weight_decay, i1k.optim.b2, i1k.data.mixup_alpha) == (0.05, 0.95, 0.2)
  gpt = get("gpt2_owt", "kind=btt,rank=4,width=1024")
  assert gpt.batch_size * gpt.data.seq_len == 245_760 and gpt.model.heads == 16
  assert (gpt.optim.final_lr_frac, gpt.optim.warmup_steps, gpt.model.structure.rank) == (0.1, 2000, 4)
