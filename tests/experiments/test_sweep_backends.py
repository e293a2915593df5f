"""Sweeps on Ray (a local cluster) and on submitit's local executor: 2 short runs complete, a
re-run does nothing, and a sweep killed midway and restarted finishes every run exactly once."""

import os
import signal
import subprocess
import sys
import time

import pytest
import ray

import runfiles
from experiments import sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 60


@pytest.fixture(scope="module")
def ray_address():
  """One local Ray cluster (2 CPUs) for the module; sweeps join it with --ray-address."""
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
  yield ray.get_runtime_context().gcs_address
  ray.shutdown()


def _sweep_file(tmp_path):
  path = tmp_path / "two.py"
  path.write_text(
      f"CONFIG = {os.path.join(REPO, 'configs/mlp_synthetic.py')!r}\n"
      "RESOURCES = {'cpus': 1}\n"
      "def get_sweep(arg=None):\n"
      f"  return [{{'arg': 'runlocal', 'model.width': w, 'steps': {STEPS}, 'log_every': 10,\n"
      f"           'checkpoint_every': 20, 'eval_every': {STEPS}}} for w in (16, 24)]\n")
  return path


def _kill_midway_restart_and_rerun(tmp_path, *backend_args):
  root = tmp_path / "runs"
  cmd = [sys.executable, "-m", "experiments.sweep", "--sweep", str(_sweep_file(tmp_path)),
         "--root", str(root), *backend_args]
  proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  t0 = time.time()
  while not any(runfiles.read_metrics(str(d)) for d in root.glob("*")):
    assert proc.poll() is None, proc.stdout.read()
    assert time.time() - t0 < 240
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)   # the sweep driver and whatever shares its session
  proc.wait()
  assert not all(runfiles.is_finished(str(d)) for d in root.glob("*"))

  restarted = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert restarted.returncode == 0, restarted.stdout + restarted.stderr
  runs = [d for d in sorted(root.glob("*")) if not d.name.startswith(".")]
  assert len(runs) == 2
  for run in runs:
    steps = [r["step"] for r in runfiles.read_metrics(str(run))]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS   # no step twice
    assert sum(bool(r.get("final")) for r in runfiles.read_metrics(str(run))) == 1
    # a finished run started again would log a resume from its last step
    assert f"resuming from the checkpoint at step {STEPS}" not in (run / "log.txt").read_text()
    assert run.name in restarted.stdout

  logs = {run: (run / "log.txt").read_text() for run in runs}
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and "2 runs, 2 already done" in again.stdout, again.stdout
  assert {run: (run / "log.txt").read_text() for run in runs} == logs   # nothing ran


@pytest.mark.slow
def test_ray_sweep_killed_midway_finishes_every_run_once(tmp_path, ray_address):
  _kill_midway_restart_and_rerun(tmp_path, "--backend", "ray", "--ray-address", ray_address)


@pytest.mark.slow
def test_slurm_sweep_on_submitits_local_executor_finishes_every_run_once(tmp_path):
  _kill_midway_restart_and_rerun(tmp_path, "--backend", "slurm", "--slurm-executor", "local",
                                 "--workers", "2")


def test_slurm_print_commands_shows_the_sbatch_settings(tmp_path, capsys):
  sweep.main(["--sweep", str(_sweep_file(tmp_path)), "--root", "/r", "--backend", "slurm",
              "--print-commands", "--partition", "gpu", "--time", "30", "--gpus", "8",
              "--nodes", "2", "--cpus", "16"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2   # one sbatch line per run
  assert lines[0].startswith("sbatch --job-name=")
  for flag in ("--partition=gpu", "--time=30", "--gpus-per-node=8", "--nodes=2",
               "--ntasks-per-node=1", "--cpus-per-task=16"):
    assert flag in lines[0]
  assert "STRUX_DISTRIBUTED=1 srun " in lines[0] and "-m experiments.main" in lines[0]


@pytest.mark.parametrize("backend, module, extra", [("ray", "ray", "ray"), ("slurm", "submitit", "slurm")])
def test_missing_engine_names_the_extra(tmp_path, monkeypatch, backend, module, extra):
  monkeypatch.setitem(sys.modules, module, None)   # import fails as if not installed
  with pytest.raises(SystemExit, match=rf"the {backend} backend needs {module}, which is not "
                     rf"installed: pip install -e '\.\[{extra}\]'"):
    sweep.main(["--sweep", str(_sweep_file(tmp_path)), "--root", str(tmp_path), "--backend", backend])
