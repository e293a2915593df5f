"""Sweep expansion, naming, skipping and command printing."""

import os
import shlex

from configs.sweeps import product, zipped
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
