"""End-to-end behaviour of the trainer on the synthetic task."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from configs import gpt2_bytes, mlp_synthetic
import runfiles
from experiments import config as run_config
from experiments.train import loop as train, optim, step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _config(**overrides):
  config = mlp_synthetic.get_config("runlocal")
  with config.unlocked():
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


@pytest.mark.parametrize("kind", ["dense", "low_rank", "btt"])
def test_two_steps_lower_the_loss(kind):
  config = _config(**{"model.kind": kind, "optim.warmup_steps": 0, "optim.schedule": "constant",
                      "optim.lr": 1e-2})
  run = train.build(run_config.parse(config))
  task, model, optimizer = run.task, run.model, run.optimizer
  batch = task.train_batch(0)
  before = float(step.eval_step(model, batch, task.loss)["loss"])
  for _ in range(2):
    step.train_step(model, optimizer, batch, task.loss)
  after = float(step.eval_step(model, batch, task.loss)["loss"])
  assert after < before


def test_flops_are_examples_times_three_forward(tmp_path):
  config = _config(**{"model.kind": "btt", "model.width": 64, "steps": 10})
  train.train_and_evaluate(run_config.parse(config), str(tmp_path))
  run = train.build(run_config.parse(config))
  model = run.model
  per_example = model.flops_per_example()
  layers = [model.embed, model.readout] + [l for b in model.blocks for l in (b.up, b.down)]
  assert per_example == sum(l.flops_per_token() for l in layers)
  records = runfiles.read_metrics(str(tmp_path))
  assert records[-1]["final"] and records[-1]["step"] == 10
  params = sum(l.num_params() for l in layers) + sum(2 * 64 for _ in model.blocks) + 2 * 64
  for r in records:   # LayerNorm scale and bias: one per block and the final norm
    assert r["flops"] == r["examples"] * 3 * per_example
    assert r["params"] == r["non_embedding_params"] == params
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["model"]["kind"] == "btt"


def test_language_eval_reports_bits_per_token_and_per_byte():
  config = gpt2_bytes.get_config("runlocal")
  run = train.build(run_config.parse(config))
  task, model, mesh = run.task, run.model, run.mesh
  metrics = train.evaluate(model, task, mesh)
  assert metrics["eval_bits_per_token"] == pytest.approx(metrics["eval_loss"] / math.log(2))
  assert metrics["eval_bits_per_byte"] == metrics["eval_bits_per_token"]   # a byte is a token
  task.bytes_per_token = 4.0   # BPE: about 4 bytes of text per GPT-2 token
  assert train.evaluate(model, task, mesh)["eval_bits_per_byte"] == pytest.approx(
      metrics["eval_bits_per_token"] / 4)


def _main(*args):
  return subprocess.run([sys.executable, "-m", "experiments.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,message,choice", [
    ("--config.model.widht=64", "unknown config key 'model.widht'", "'width'"),
    ("--config.model.kind=foo", "unknown structure kind 'foo'", "'btt'"),
    ("--config.model.width=abc", "--config.model.width=abc", "int"),
])
def test_bad_config_is_one_clear_error(tmp_path, override, message, choice):
  out = _main("--config=configs/mlp_synthetic.py:runlocal", override, f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert message in out.stderr and choice in out.stderr
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "metrics.jsonl")


@pytest.mark.parametrize("scale", [0.1, 10.0, float("nan")])
def test_clip_by_global_norm_matches_optax(scale):
  """optim's one-multiply clipping gives optax.clip_by_global_norm's updates (float32 1e-6):
  below the norm unchanged, above it scaled to it, NaN where the norm is NaN."""
  keys = jax.random.split(jax.random.key(0), 2)
  grads = {"w": scale * jax.random.normal(keys[0], (3, 4)), "b": jax.random.normal(keys[1], (5,))}
  ours, theirs = (tx.update(grads, tx.init(grads))[0]
                  for tx in (optim.clip_by_global_norm(2.0), optax.clip_by_global_norm(2.0)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, theirs)
  if math.isnan(scale):
    assert all(np.isnan(g).all() for g in jax.tree.leaves(ours))
  else:
    assert float(optax.tree.norm(ours)) == pytest.approx(min(float(optax.tree.norm(grads)), 2.0),
                                                         rel=1e-6)
