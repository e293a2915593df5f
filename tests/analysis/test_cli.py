"""python -m analysis on synthetic sweeps: outputs written, bad input is one clear message."""

import json
import subprocess
import sys

import pytest

from analysis import __main__ as cli
from analysis import runs
from conftest import write_run, write_sweep


def test_cli_writes_plots_and_reports(tmp_path, sweep):
  out = tmp_path / "out"
  assert cli.main([str(sweep), "--out", str(out), "--bootstrap", "30"]) == 0
  for name in ("scaling.png", "multiplier.png", "residuals.png", "exponents.png"):
    assert (out / name).stat().st_size > 10_000, name
  summary = (out / "summary.md").read_text()
  rows = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
  assert "0.3 [0.3, 0.3]" in rows["btt"] and "4 [4, 4]" in rows["btt"]   # alpha; k0 = 4
  assert "Hold-out" in (out / "fit_report.md").read_text()


def test_nan_runs_are_excluded_and_listed(tmp_path, sweep):
  write_run(sweep, "dense_nan", "dense", 9, [(1e9, 2.0), (1e10, float("nan"))])
  df = runs.load([str(sweep)])
  kept, excluded = runs.exclude_diverged(df)
  assert list(excluded) == ["dense_nan"] and "dense_nan" not in set(kept["run"])
  assert cli.main([str(sweep), "--out", str(tmp_path / "out"), "--bootstrap", "5"]) == 0
  assert "dense_nan" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("make, message", [
    (lambda root: root.mkdir(), "no runs"),
    (lambda root: write_run(root, "a", "dense", 1, [(1e9, float("nan")), (1e10, 1.0)]),
     "non-finite"),
    (lambda root: [write_run(root, f"d{w}", "dense", w, [(10.0**(9 + w), 1.0 / w)]) for w in (1, 2)]
     + [write_run(root, "btt1", "btt", 1, [(1e9, 1.0), (1e10, 0.5)])], "family 'btt' has 1 run"),
])
def test_bad_input_is_one_clear_message(tmp_path, make, message):
  root = tmp_path / "sweep"
  make(root)
  with pytest.raises(runs.AnalysisError, match=message):
    cli.analyse([str(root)], str(tmp_path / "out"), n_boot=5)
  proc = subprocess.run([sys.executable, "-m", "analysis", str(root), "--out", str(tmp_path / "o")],
                        capture_output=True, text=True)
  assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_help_describes_outputs():
  proc = subprocess.run([sys.executable, "-m", "analysis", "--help"], capture_output=True, text=True)
  assert proc.returncode == 0 and "summary.md" in proc.stdout and "--bootstrap" in proc.stdout


def test_unfinished_runs_are_flagged(tmp_path):
  write_run(tmp_path, "r", "dense", 1, [(1.0, 2.0), (2.0, 1.0)], final=False)
  (tmp_path / "r" / "metrics.jsonl").open("a").write('{"step": 30, "train_loss": 0.9}\n')
  df = runs.load([str(tmp_path)])
  assert not df["finished"].any() and len(df) == 2
  assert json.loads((tmp_path / "r" / "config.json").read_text())["model"]["kind"] == "dense"
