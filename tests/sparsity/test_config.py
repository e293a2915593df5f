"""Sparsity configs: each bad setting is one clear error; the runlocal variants train and log
density, live and time-averaged parameters and ideal FLOPs."""

import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import runfiles
import structured
from configs import mlp_fashion_sparse
from experiments import config as run_config
from experiments.errors import ConfigError
from experiments.sparsity import plan as plans, schedule
from experiments.train import loop as train
from structured import StructureError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
GOOD = dict(method="rigl", density=0.1, distribution="uniform", delta_t=10, start_frac=0.0,
            end_frac=0.75, drop_fraction=0.3, lambda_w=2e-4, switch_frac=0.5)


@pytest.mark.parametrize("key,value,message", [
    ("density", 0.0, "sparsity.density=0.0 must be in (0, 1]"),
    ("density", 1.5, "sparsity.density=1.5 must be in (0, 1]"),
    ("end_frac", 0.1, "sparsity.end_frac=0.1 is before sparsity.start_frac=0.2"),
    ("method", "prune", "sparsity.method='prune' is unknown; valid: ['none', 'static', 'gmp'"),
    ("distribution", "normal", "sparsity.distribution='normal' is unknown; valid: ['uniform', 'erk']"),
    ("delta_t", 0, "sparsity.delta_t=0 must be an int >= 1"),
])
def test_bad_sparsity_setting_is_one_clear_error(key, value, message):
  config = mlp_fashion_sparse.get_config("runlocal")
  with config.unlocked():
    config.sparsity.update(dict(GOOD, start_frac=0.2, **{key: value}))
  with pytest.raises(ConfigError) as error:
    run_config.parse(config)
  assert message in str(error.value)


def test_n_greater_than_m_is_one_clear_error():
  config = run_config.parse(mlp_fashion_sparse.get_config("method=srste,n=4,m=2,runlocal"))
  with pytest.raises(StructureError, match=r"nm_sparse n=4 must be an integer in \[1, m=2\]"):
    train.build(config)


class _One(nnx.Module):
  def __init__(self, kind, **hparams):
    self.l = structured.make(kind, 16, 16, rngs=nnx.Rngs(0), **hparams)


@pytest.mark.parametrize("kind,hparams,method,message", [
    ("sparse_lowrank", {}, "rigl", "stores its entries at fixed positions; use kind 'sparse'"),
    ("nm_sparse", {}, "set", "keeps 2:4; for N:M use 'srste'"),
    ("sparse", {}, "srste", "sparsity.method='srste' is for N:M layers"),
    ("dense", {}, "gmp", "needs masked layers, but the model has none"),
])
def test_method_that_cannot_work_on_the_model_is_one_clear_error(kind, hparams, method, message):
  sched = schedule.make(schedule.SparsityConfig(**dict(GOOD, method=method)), 100, 0)
  with pytest.raises(ConfigError, match=message):
    plans.make(sched, _One(kind, **hparams))


def test_cli_reports_a_bad_method_in_one_line(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.main",
                        "--config=configs/mlp_fashion_sparse.py:method=prune,runlocal",
                        f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert "error: sparsity.method='prune' is unknown; valid:" in out.stderr


@pytest.mark.parametrize("method", ["gmp", "rigl", "srste"])
def test_runlocal_trains_and_logs_what_the_masks_cost(method, tmp_path):
  config = run_config.parse(mlp_fashion_sparse.get_config(f"method={method},runlocal"))
  last = train.train_and_evaluate(config, str(tmp_path))
  records = runfiles.read_metrics(str(tmp_path))
  assert last["final"] and records[-1]["train_loss"] < records[0]["train_loss"]
  want = {"gmp": 0.1, "rigl": 0.1, "srste": 0.5}[method]
  assert all(r["ideal_flops"] <= r["flops"] for r in records)
  assert last["ideal_flops"] < last["flops"]
  assert last["density"] == pytest.approx(want, abs=1e-3)
  if method == "gmp":   # dense, then pruned: the time average lies between
    densities = [r["density"] for r in records]
    assert densities[0] == 1.0 and densities == sorted(densities, reverse=True)
    assert last["live_params"] < last["avg_live_params"] < records[0]["live_params"]
  else:
    assert {r["live_params"] for r in records} == {last["avg_live_params"]}
  assert np.isfinite(last["eval_loss"])
