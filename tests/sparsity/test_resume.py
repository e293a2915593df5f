"""A moving-mask run killed mid-schedule and resumed ends bitwise equal to a straight run:
masks are model state (checkpointed), and every mask update is a function of (seed, step)."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from configs import mlp_fashion_sparse
from experiments import config as run_config
from experiments.train import checkpoint, loop as train
from structured.masked import Mask

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
STEPS = 60
# RigL: updates every 15 steps until 45, killed after the step-20 checkpoint (between updates);
# GMP: the ramp prunes at 15 (still dense), 30 and 45, killed after the step-40 checkpoint.
KILL_AFTER = {"rigl": 20, "gmp": 40}
OVERRIDES = {"steps": STEPS, "checkpoint_every": 10, "log_every": 5, "sparsity.delta_t": 15}


def _config(method):
  config = mlp_fashion_sparse.get_config(f"method={method},runlocal")
  with config.unlocked():
    config.steps, config.checkpoint_every, config.log_every = STEPS, 10, 5
    config.sparsity.delta_t = 15
  return run_config.parse(config)


def _state(config, workdir):
  run = train.build(config)
  meta = checkpoint.Checkpointer(str(workdir)).restore_latest(run.model, run.optimizer)
  return meta["step"], nnx.state(run.model, nnx.Param), nnx.state(run.model, Mask)


def _checkpoints(workdir):
  path = os.path.join(workdir, "checkpoints")
  return [int(d) for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []


@pytest.mark.parametrize("method", sorted(KILL_AFTER))
def test_sigkill_mid_schedule_resumes_bitwise(method, tmp_path):
  config = _config(method)
  train.train_and_evaluate(config, str(tmp_path / "straight"))
  killed = str(tmp_path / "killed")
  args = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  proc = subprocess.Popen([sys.executable, "-m", "experiments.main",
                           f"--config=configs/mlp_fashion_sparse.py:method={method},runlocal",
                           *args, f"--workdir={killed}"], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  t0 = time.time()
  while not any(s >= KILL_AFTER[method] for s in _checkpoints(killed)):
    assert proc.poll() is None, "the run finished before it could be killed"
    assert time.time() - t0 < 600
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert max(_checkpoints(killed)) < STEPS
  train.train_and_evaluate(config, killed)
  step_a, params_a, masks_a = _state(config, tmp_path / "straight")
  step_b, params_b, masks_b = _state(config, killed)
  assert step_a == step_b == STEPS
  assert jax.tree.leaves(masks_a) and not all(np.all(m) for m in jax.tree.leaves(masks_a))
  for a, b in zip(jax.tree.leaves((params_a, masks_a)), jax.tree.leaves((params_b, masks_b))):
    np.testing.assert_array_equal(a, b)
