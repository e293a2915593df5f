"""Preemption and exact resume, corrupted checkpoints, and the non-finite guard."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from configs import mlp_synthetic
import runfiles
from experiments import config as run_config
from experiments.tasks.synthetic import TeacherStudent
from experiments import errors
from experiments.train import checkpoint, loop as train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
STEPS = 400
ARGS = ["--config=configs/mlp_synthetic.py:runlocal", f"--config.steps={STEPS}",
        "--config.checkpoint_every=20", "--config.log_every=5", "--config.eval_every=100"]


def _start(workdir):
  return subprocess.Popen([sys.executable, "-m", "experiments.main", *ARGS, f"--workdir={workdir}"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(workdir):
  proc = _start(workdir)
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, out


def _params(workdir):
  config = mlp_synthetic.get_config("runlocal")
  run = train.build(run_config.parse(config))
  model, optimizer = run.model, run.optimizer
  meta = checkpoint.Checkpointer(str(workdir)).restore_latest(model, optimizer)
  return meta["step"], jax.tree.leaves(nnx.state(model, nnx.Param))


def _wait_for(predicate, proc, timeout=120):
  t0 = time.time()
  while not predicate():
    assert proc.poll() is None, "the run finished before it could be interrupted"
    assert time.time() - t0 < timeout
    time.sleep(0.02)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  rc, out = _run(workdir)
  assert rc == 0, out
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_resumes_bit_for_bit(straight, tmp_path, sig):
  proc = _start(tmp_path)
  if sig == signal.SIGTERM:
    _wait_for(lambda: len(runfiles.read_metrics(str(tmp_path))) >= 8, proc)
  else:   # SIGKILL right after a checkpoint exists
    _wait_for(lambda: any(d.isdigit() for d in os.listdir(tmp_path / "checkpoints"))
              if (tmp_path / "checkpoints").exists() else False, proc)
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == (143 if sig == signal.SIGTERM else -9), out
  interrupted_at = max(r["step"] for r in runfiles.read_metrics(str(tmp_path)))
  assert interrupted_at < STEPS
  rc, out = _run(tmp_path)
  assert rc == 0 and "resuming from the checkpoint at step" in out, out
  step_a, params_a = _params(straight)
  step_b, params_b = _params(tmp_path)
  assert step_a == step_b == STEPS
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)
  steps = [r["step"] for r in runfiles.read_metrics(str(tmp_path))]
  assert steps == sorted(set(steps)) and steps[-1] == STEPS   # no step logged twice


def test_corrupt_newest_checkpoint_falls_back(tmp_path):
  config = mlp_synthetic.get_config("runlocal")
  train.train_and_evaluate(run_config.parse(config), str(tmp_path))   # checkpoints at steps 10 and 20
  newest = tmp_path / "checkpoints" / "20"
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  run = train.build(run_config.parse(config))
  model, optimizer = run.model, run.optimizer
  meta = checkpoint.Checkpointer(str(tmp_path)).restore_latest(model, optimizer)
  assert meta["step"] == 10


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  config = mlp_synthetic.get_config("runlocal")
  clean = TeacherStudent.train_batch
  poisoned = lambda self, step: {k: v * np.nan for k, v in clean(self, step).items()}
  monkeypatch.setattr(TeacherStudent, "train_batch",
                      lambda self, step: (poisoned if step == 15 else clean)(self, step))
  with pytest.raises(errors.NonFiniteError, match=r"non-finite gradient at step 15 .*first non-finite "
                     r"gradient: [\w/]+.*checkpoint \(step 10\) is intact"):
    train.train_and_evaluate(run_config.parse(config), str(tmp_path))
  run = train.build(run_config.parse(config))
  model, optimizer = run.model, run.optimizer
  assert checkpoint.Checkpointer(str(tmp_path)).restore_latest(model, optimizer)["step"] == 10
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
