"""Run-config validation: every numeric key of every config has a range, and any bad value (wrong
type, out of range, a typo'd key) is one error naming the key before anything is written; the
CLI turns it into one line and a non-zero exit. Also WANDB_MODE from the environment."""

import glob
import importlib
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import mlp_synthetic
from experiments import config as run_config
from experiments.errors import ConfigError, StructureError
from experiments.train import writers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if hasattr(importlib.import_module(f"configs.{os.path.basename(p)[:-3]}"),
                            "get_config"))
CHECKED_BY_THEIR_SECTION = {"model.dropout", "mup.base_depth"}
SECTIONS_THAT_CHECK_THEMSELVES = ("sparsity.",)   # SparsityConfig (tests/sparsity/test_config.py)
BAD_VALUES = (-5, -1, 0, 1.5, 10**12, float("nan"), float("inf"), -0.5, "x", True, None)


def _numeric_keys(node, prefix=""):
  """Dotted keys of the numeric leaves of a ConfigDict (structure hyperparameters excluded: the
  families check those, see tests/structured)."""
  for key, value in node.items():
    dotted = f"{prefix}{key}"
    if hasattr(value, "items"):
      if key not in ("structure", "overrides"):
        yield from _numeric_keys(value, dotted + ".")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield dotted


@pytest.mark.parametrize("name", CONFIGS)
def test_every_numeric_key_has_a_range(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  unchecked = {key for key in set(_numeric_keys(config)) - set(run_config.RANGES)
               - CHECKED_BY_THEIR_SECTION if not key.startswith(SECTIONS_THAT_CHECK_THEMSELVES)}
  assert not unchecked


def _override(config, dotted: str, value):
  """Sets ``dotted`` as the CLI's --config.<dotted>=<value> does (type-safe: ml_collections
  refuses another type, which the CLI reports as a bad flag naming the key)."""
  *path, leaf = dotted.split(".")
  node = config
  for key in path:
    node = node[key]
  node[leaf] = value


KEYS = sorted(set(_numeric_keys(mlp_synthetic.get_config("runlocal"))))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(key=st.sampled_from(KEYS), value=st.sampled_from(BAD_VALUES))
def test_any_bad_value_is_one_error_naming_the_key(key, value):
  config = mlp_synthetic.get_config("runlocal")
  try:
    _override(config, key, value)
  except (TypeError, ValueError) as refused:   # the CLI: "error: flag --config.<key>=..."
    assert key.rsplit(".", 1)[-1] in str(refused)
    return
  try:
    run_config.parse(config)
  except (ConfigError, StructureError) as error:
    message = str(error)
    assert key in message and "\n" not in message, message
    if isinstance(value, (int, float)):
      assert repr(value) in message or repr(float(value)) in message, message
    return
  test, _ = run_config.RANGES.get(key, (lambda v: True, ""))   # accepted: then it is allowed
  assert math.isfinite(value) and test(value), (key, value)


def _main(*args, workdir):
  return subprocess.run([sys.executable, "-m", "experiments.main",
                         "--config=configs/mlp_synthetic.py:runlocal", *args,
                         f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("override,message", [
    ("--config.steps=-5", "config key 'steps'=-5 is out of range; allowed: >= 1"),
    ("--config.batch_size=0", "config key 'batch_size'=0 is out of range; allowed: >= 1"),
])
def test_cli_out_of_range_is_one_line_and_writes_nothing(tmp_path, override, message):
  out = _main(override, workdir=tmp_path / "run")
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == f"error: {message}"
  assert not os.path.exists(tmp_path / "run")


def test_cli_unwritable_workdir_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  out = _main(workdir=tmp_path / "file" / "run")
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: --workdir '{tmp_path}/file/run' cannot be created: '{tmp_path}/file' is a file")


def test_wandb_mode_from_the_environment_wins(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "disabled")
  cfg = writers.WandbConfig(mode="offline", project="strux")
  writer = writers.MetricWriter(str(tmp_path), {}, cfg, total_steps=1)
  writer.write({"step": 1, "train_loss": 1.0})
  writer.close()
  assert sorted(os.listdir(tmp_path)) == ["config.json", "metrics.jsonl"]   # no wandb files
  monkeypatch.setenv("WANDB_MODE", "offlne")
  with pytest.raises(ConfigError, match=r"WANDB_MODE='offlne' \(environment\) is unknown"):
    writers.WandbConfig(mode="offline", project="strux")
