"""Checkpoints written before the typed-config / muP-object refactor still restore, and the run
continues as the straight run did, to 1e-6 relative: BTT's contraction is now batched matmuls
(structured/btt.py) whose float32 summation order differs from the einsum the fixture ran (the
unrolled run matched bitwise before that change; the observed difference is ~1e-7).

The fixture is step 20 of ``configs/mlp_synthetic.py:kind=btt,rank=1,runlocal`` with
``steps=30, checkpoint_every=10, log_every=1``, written by commit aca1713 (before the change),
with that run's straight 30-step metrics. Scanned blocks (``model.scan_layers``) are stored
stacked and restore the per-block fixture through ``checkpoint.relayout``; their losses differ
from the unrolled run's in the last bits (XLA fuses a scanned block differently: about 1e-7
relative over 20 steps).
"""

import os
import shutil

import numpy as np
import pytest

import runfiles
from configs import mlp_synthetic
from experiments import config as run_config
from experiments.train import loop

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "checkpoint_v1")


@pytest.mark.parametrize("scan_layers", [False, True])
def test_old_checkpoint_restores_and_continues_as_the_straight_run(tmp_path, scan_layers):
  shutil.copytree(os.path.join(FIXTURE, "checkpoints"), tmp_path / "checkpoints")
  straight = runfiles.parse_metrics(open(os.path.join(FIXTURE, "metrics_straight.jsonl")).readlines())
  with open(runfiles.metrics_path(str(tmp_path)), "w") as f:
    for record in straight[:20]:
      runfiles.write_line(f, record)
  config = mlp_synthetic.get_config("kind=btt,rank=1,runlocal")
  with config.unlocked():
    config.steps, config.checkpoint_every, config.log_every = 30, 10, 1
    config.mesh.data = 1   # the fixture ran on one device (summation order)
    config.model.scan_layers = scan_layers
  loop.train_and_evaluate(run_config.parse(config), str(tmp_path))
  resumed = runfiles.read_metrics(str(tmp_path))
  assert [r["step"] for r in resumed] == list(range(1, 31))
  old, new = ([r["train_loss"] for r in rows[20:]] for rows in (straight, resumed))
  np.testing.assert_allclose(new, old, rtol=1e-6)
