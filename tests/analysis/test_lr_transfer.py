"""The lr-transfer report finds each width's best learning rate and its shift in grid steps."""

import json
import os

from analysis import lr_transfer, runs


def _run(root, name, param, width, lr, loss):
  os.makedirs(root / name)
  config = {"mup": {"parametrization": param}, "model": {"kind": "dense", "width": width},
            "optim": {"lr": lr}}
  (root / name / "config.json").write_text(json.dumps(config))
  (root / name / "metrics.jsonl").write_text(json.dumps(
      {"step": 10, "flops": 1.0, "eval_loss": loss, "final": True}) + "\n")


def test_best_lr_and_shift(tmp_path):
  lrs = [1e-3, 2e-3, 4e-3, 8e-3]
  for width, best in ((64, 2), (1024, 2)):   # muP: same best lr
    for i, lr in enumerate(lrs):
      _run(tmp_path, f"mup{width}_{i}", "mup", width, lr, 1 + abs(i - best))
  for width, best in ((64, 3), (1024, 0)):   # SP: best lr drops 3 grid steps
    for i, lr in enumerate(lrs):
      _run(tmp_path, f"sp{width}_{i}", "standard", width, lr, float("nan") if i == 3 and width == 1024
           else 1 + abs(i - best))
  table = lr_transfer.shifts(lr_transfer.best_lrs(lr_transfer.final_losses(runs.load([str(tmp_path)]))))
  shift = table.set_index("parametrization")["shift (x2 steps)"]
  assert shift["mup"] == 0 and shift["standard"] == -3
