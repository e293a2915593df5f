"""`python -m analysis.study <study> --quick` runs both stages of a committed study config end to
end (real training runs, seconds each) and writes every result file with every family in it.
The GPT-2 study shares that command's code; its runs are checked through the typed boundary."""

import importlib
import json
import subprocess
import sys

import pytest

from configs.sweeps import scaling_gpt2_bytes, scaling_mlp_fashion
from experiments import config as run_config

FAMILIES = ("dense", "low_rank", "btt", "monarch", "kronecker")


@pytest.mark.slow
def test_quick_study_writes_results_for_every_family(tmp_path):
  config = scaling_mlp_fashion
  assert {arg.split(",")[0].removeprefix("kind=") for arg in config.FAMILIES} == set(FAMILIES)
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, "-m", "analysis.study", "mlp_fashion", "--quick", "--root",
                         str(tmp_path / "runs"), "--out", str(out), "--workers", "2",
                         "--bootstrap", "20"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("scaling.png", "multiplier.png", "summary.md", "fit_report.md", "lr_sweep.md",
               "commands.md"):
    assert (out / name).stat().st_size > 100, name
  assert json.loads((out / "lr.json").read_text())["lr"] in config.LRS[:2]
  rows = [line.split("|")[1].strip() for line in (out / "summary.md").read_text().splitlines()
          if line.startswith("| ") and not line.startswith("| family")]
  assert sorted(rows) == sorted(FAMILIES)
  assert f"--sweep_arg lr={json.loads((out / 'lr.json').read_text())['lr']:g},quick" in \
      (out / "commands.md").read_text()


@pytest.mark.parametrize("stage", ["lr", "lr=0.004"])
@pytest.mark.parametrize("quick", ["", ",quick"])
def test_gpt2_study_runs_parse_at_the_typed_boundary(stage, quick):
  runs = scaling_gpt2_bytes.get_sweep(stage + quick)
  module = importlib.import_module(scaling_gpt2_bytes.CONFIG.removesuffix(".py").replace("/", "."))
  kinds, widths = set(), set()
  for run in runs:
    config = module.get_config(run.get("arg"))
    config.update_from_flattened_dict({k: v for k, v in run.items() if k != "arg"})
    typed = run_config.parse(config)
    kinds.add(typed.model.structure.kind)
    widths.add((typed.model.structure.kind, typed.model.width))
    assert typed.steps == (20 if quick else 600)
  if stage == "lr":
    assert kinds == {"dense"} and len(runs) == (2 if quick else len(scaling_gpt2_bytes.LRS))
  else:
    assert kinds == set(FAMILIES)
    assert len(widths) == (2 if quick else 5) * len(FAMILIES)
