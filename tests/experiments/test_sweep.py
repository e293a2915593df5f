"""Sweep expansion, naming, skipping and command printing."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from configs.sweeps import product, zipped
import runfiles
from experiments import sweep

SWEEP = "configs/sweeps/mlp_synthetic.py"


def test_grids():
  assert product(a=[1, 2], b=["x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
  assert zipped(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]


def test_names_are_deterministic_and_unique():
  config, runs = sweep.load_sweep(SWEEP, None)
  names = [sweep.run_name(r) for r in runs]
  assert len(set(names)) == len(runs) == 12
  assert names == [sweep.run_name(r) for r in sweep.load_sweep(SWEEP, None)[1]]


def test_print_commands_are_runnable_command_lines(capsys):
  assert sweep.main(["--sweep", SWEEP, "--print-commands", "--root", "/tmp/r"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 12
  argv = shlex.split(lines[0])
  assert argv[1:3] == ["-m", "experiments.main"]
  assert any(a.startswith("--workdir=/tmp/r/") for a in argv)


def test_finished_runs_are_skipped(tmp_path, capsys):
  config, runs = sweep.load_sweep(SWEEP, None)
  done = tmp_path / sweep.run_name(runs[0])
  os.makedirs(done)
  (done / "metrics.jsonl").write_text('{"step": 1, "final": true}\n')
  sweep.main(["--sweep", SWEEP, "--dry-run", "--root", str(tmp_path)])
  out = capsys.readouterr().out
  assert f"done  {sweep.run_name(runs[0])}" in out and "12 runs, 11 to run" in out


def test_launcher_template_wraps_each_command(capsys):
  sweep.main(["--sweep", SWEEP, "--print-commands", "--launcher", "ssh host --command={cmd}"])
  first = capsys.readouterr().out.splitlines()[0]
  assert first.startswith("ssh host --command='") and "experiments.main" in first


@pytest.mark.slow
def test_killed_sweep_restarted_finishes_every_run_once(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sweep_file = tmp_path / "tiny.py"
  sweep_file.write_text(
      f"CONFIG = {os.path.join(repo, 'configs/mlp_synthetic.py')!r}\n"
      "def get_sweep(arg=None):\n"
      "  return [{'arg': 'runlocal', 'model.width': w, 'steps': 150, 'log_every': 10} for w in (16, 32)]\n")
  root = tmp_path / "runs"
  cmd = [sys.executable, "-m", "experiments.sweep", "--sweep", str(sweep_file), "--root", str(root)]
  proc = subprocess.Popen(cmd, cwd=repo, start_new_session=True, stdout=subprocess.PIPE, text=True)
  t0 = time.time()
  while not any(runfiles.read_metrics(str(d)) for d in root.glob("*")) and time.time() - t0 < 120:
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)   # the sweep and the run it was executing
  proc.wait()
  out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600).stdout
  runs = sorted(root.glob("*"))
  assert len(runs) == 2
  for run in runs:
    records = runfiles.read_metrics(str(run))
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] == 150
    assert sum(bool(r.get("final")) for r in records) == 1
    assert run.name in out   # the summary lists every run
