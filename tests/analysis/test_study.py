"""`python -m analysis.study <study> --quick` runs both stages of a committed study config end to
end (real training runs, seconds each) and writes every result file with every family in it."""

import json
import subprocess
import sys

import pytest

from configs.sweeps import scaling_gpt2_bytes, scaling_mlp_fashion

FAMILIES = ("dense", "low_rank", "btt", "monarch", "kronecker")


@pytest.mark.parametrize("study, config", [("mlp_fashion", scaling_mlp_fashion),
                                           ("gpt2_bytes", scaling_gpt2_bytes)])
def test_quick_study_writes_results_for_every_family(tmp_path, study, config):
  assert {arg.split(",")[0].removeprefix("kind=") for arg in config.FAMILIES} == set(FAMILIES)
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, "-m", "analysis.study", study, "--quick", "--root",
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
