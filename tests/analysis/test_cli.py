"""python -m analysis on synthetic sweeps: outputs written, bad input is one clear message."""

import json
import subprocess
import sys

import pytest

from analysis import __main__ as cli
from analysis import calibration, runs
from conftest import write_run, write_sweep


def test_cli_writes_plots_and_reports(tmp_path, sweep):
  out = tmp_path / "out"
  assert cli.main([str(sweep), "--out", str(out), "--bootstrap", "30"]) == 0
  for name in ("scaling.png", "multiplier.png", "residuals.png", "exponents.png"):
    assert (out / name).stat().st_size > 10_000, name
  summary = (out / "summary.md").read_text()
  rows = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
  alpha = f"{calibration.true_alpha():.3g}"
  assert f"{alpha} [{alpha}, {alpha}]" in rows["btt"] and "4 [4, 4]" in rows["btt"]   # k0 = 4
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
    (lambda root: write_run(root, "btt1", "btt", 1, [(1e9, 1.0), (1e10, 0.5)]),
     "no family could be fitted: family 'btt' has 1 run"),
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


def _summary(tmp_path, sweep, n_boot=5):
  proc = subprocess.run([sys.executable, "-m", "analysis", str(sweep), "--out", str(tmp_path / "o"),
                         "--bootstrap", str(n_boot)], capture_output=True, text=True)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
  return proc.stderr, (tmp_path / "o" / "summary.md").read_text()


def test_unreadable_config_is_one_line_per_run_and_the_rest_is_analysed(tmp_path, sweep):
  for name, text in (("cut", '{"model": {"kind": "den'), ("listed", "[1, 2]")):
    write_run(sweep, name, "dense", 9, [(1e9, 2.0)])
    (sweep / name / "config.json").write_text(text)
  stderr, summary = _summary(tmp_path, sweep)
  lines = [line for line in stderr.splitlines() if "left out" in line]
  assert len(lines) == 2 and "cut" in lines[0] and "is not valid JSON" in lines[0]
  assert "listed" in lines[1] and "holds a list, not a JSON object" in lines[1]
  assert "cut/config.json is not valid JSON" in summary and "| btt |" in summary


def test_every_run_left_out_or_used_in_part_is_listed_with_its_reason(tmp_path, sweep):
  write_run(sweep, "unfinished", "dense", 9, [(1e9, 9.0), (2e9, 8.0)], final=False)
  write_run(sweep, "nan", "dense", 9, [(1e9, 9.0), (2e9, float("nan"))])
  write_run(sweep, "empty", "dense", 9, [(1e9, 9.0)])
  (sweep / "empty" / "metrics.jsonl").write_text("")
  write_run(sweep, "missing", "dense", 9, [(1e9, 9.0)])
  (sweep / "missing" / "metrics.jsonl").unlink()
  write_run(sweep, "no_eval", "dense", 9, [(1e9, 9.0)])
  (sweep / "no_eval" / "metrics.jsonl").write_text('{"step": 1, "train_loss": 3.0}\n{"step": 2, "tr')
  write_run(sweep, "corrupt", "dense", 9, [(1e9, 9.0)])
  (sweep / "corrupt" / "metrics.jsonl").write_text('{"step": 1, "eval_loss": 3.0}\n{"st\n{"step": 3}\n')
  _, summary = _summary(tmp_path, sweep)
  left_out, partial = summary.split("Runs left out:")[1].split("Runs used in part:")
  assert "- `nan`: non-finite loss (diverged)" in left_out
  assert "- `empty`: metrics.jsonl has no records" in left_out
  assert "- `missing`: no metrics.jsonl" in left_out
  assert "- `no_eval`: no evaluation logged yet" in left_out
  assert "- `corrupt`: " in left_out and "metrics.jsonl:2 is not JSON" in left_out
  assert "- `unfinished`: unfinished (last logged step 20): its 2 evaluations so far are used" in partial


def test_two_run_family_gets_a_warning_not_an_interval(tmp_path):
  sweep = write_sweep(tmp_path / "sweep", widths=4, noise=0.01)
  for name in ("btt2", "btt3"):
    for f in (sweep / name).iterdir():
      f.unlink()
    (sweep / name).rmdir()
  _, summary = _summary(tmp_path, sweep, n_boot=30)
  row = next(line for line in summary.splitlines() if line.startswith("| btt |"))
  assert row.count("(interval withheld)") == 3 and "[" not in row.split("|")[3]   # alpha, E, k
  assert "- btt: 2 runs: too few sizes" in summary.split("Intervals withheld")[1]
  dense = next(line for line in summary.splitlines() if line.startswith("| dense |"))
  assert "withheld" not in dense


def test_a_family_with_one_run_is_listed_and_the_others_analysed(tmp_path, sweep):
  write_run(sweep, "monarch1", "monarch", 1, [(1e9, 9.0), (1e10, 8.0)])
  _, summary = _summary(tmp_path, sweep)
  assert "- monarch: family 'monarch' has 1 run(s)" in summary.split("Families not fitted:")[1]
  assert "| btt |" in summary and "| monarch |" not in summary
