"""Train one run: python -m experiments.main --config configs/mlp_synthetic.py[:arg] --workdir DIR

Override any config value with --config.a.b=value (e.g. --config.model.width=128).
--dry_run builds the model and prints each core's shape, init std and muP lr multiplier.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import host_allocator

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally path:arg.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where config.json and metrics.jsonl are written.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the muP summary of the model and exit.")


def parse_flags(argv):
  """absl flag parsing; a bad --config.* override is one line naming the key and valid keys."""
  config_arg = next((a.partition("=")[2] or argv[i + 1] for i, a in enumerate(argv)
                     if a.partition("=")[0] == "--config"), None)
  if config_arg:
    config = _load_config(config_arg)
    for arg in argv:
      if arg.startswith("--config."):
        _check_override(config, arg[len("--config."):].partition("=")[0])
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    sys.exit("error: " + " ".join(str(e).replace("\\n", " ").split()))


def _load_config(config_arg: str):
  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("_strux_config", path)
  if spec is None or not os.path.exists(path):
    sys.exit(f"error: config file '{path}' not found; configs live in configs/*.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _check_override(config, dotted: str) -> None:
  node = config
  for depth, key in enumerate(dotted.split(".")):
    if not hasattr(node, "keys") or key not in node:
      where = ".".join(dotted.split(".")[:depth]) or "the top level"
      valid = sorted(node.keys()) if hasattr(node, "keys") else []
      sys.exit(f"error: unknown config key '{dotted}'; valid keys under {where}: {valid}")
    node = node[key]


def main(argv):
  del argv
  from experiments import config as run_config
  from experiments.train import distributed, loop   # imports jax; after flags so --help is fast
  from experiments.errors import USER_ERRORS
  from structured import mup
  try:
    distributed.initialize()
    if _WORKDIR.value:
      distributed.redirect_other_processes(_WORKDIR.value)
    config = run_config.parse(_CONFIG.value)
    if _DRY_RUN.value:
      run = loop.build(config)
      print(mup.describe(run.model, run.mults))
      print(f"forward FLOPs per example: {run.model.flops_per_example():,}")
      return
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required")
    if loop.train_and_evaluate(config, _WORKDIR.value).get("preempted"):
      sys.exit(143)   # 128 + SIGTERM: a scheduler sees the run as interrupted, not done
  except USER_ERRORS as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=parse_flags)
