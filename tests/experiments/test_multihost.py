"""Multi-host training with real processes: 2 local processes x 2 CPU devices form one JAX
cluster (gloo collectives), each running ``python -m experiments.main``; the single-process
reference runs here on 4 of the test's 8 fake devices with the same global batch."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

import runfiles
from configs import gpt2_bytes, mlp_synthetic
from experiments import config as run_config
from experiments.errors import ConfigError
from experiments.train import checkpoint, loop, sharding, step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROCESSES, LOCAL_DEVICES = 2, 2
MLP, GPT = "configs/mlp_synthetic.py:runlocal", "configs/gpt2_bytes.py:runlocal"
COMMON = ["--config.log_every=1", "--config.eval_every=1000"]


_LAUNCHED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftovers():
  """A failed test leaves no cluster process behind."""
  yield
  while _LAUNCHED:
    proc = _LAUNCHED.pop()
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, config, *overrides, processes=PROCESSES):
  """The cluster's processes, each with its console captured in ``workdir.console_<i>``."""
  port = _free_port()
  procs = []
  os.makedirs(workdir, exist_ok=True)
  for i in range(processes):
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", STRUX_NUM_PROCESSES=str(processes),
               STRUX_PROCESS_ID=str(i), STRUX_COORDINATOR_TIMEOUT="60")
    console = open(os.path.join(str(workdir) + f".console_{i}"), "w")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "experiments.main", f"--config={config}", *COMMON, *overrides,
         f"--workdir={workdir}"], cwd=REPO, env=env, stdout=console, stderr=subprocess.STDOUT))
  _LAUNCHED.extend(procs)
  return procs


def _wait(procs, workdir, timeout=900):   # a hang guard; CI takes well under a minute
  t0 = time.time()
  try:
    for p in procs:
      p.wait(timeout=max(1, timeout - (time.time() - t0)))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"the cluster did not finish in {timeout}s:\n{_consoles(workdir)}")
  return [p.returncode for p in procs]


def _consoles(workdir) -> str:
  texts = []
  for i in range(PROCESSES):
    for path in (f"{workdir}.console_{i}", os.path.join(workdir, "logs", f"process_{i}.txt")):
      if os.path.exists(path):
        texts.append(f"--- {path}\n" + open(path).read()[-3000:])
  return "\n".join(texts)


def _run(workdir, config, *overrides):
  rcs = _wait(_launch(workdir, config, *overrides), workdir)
  assert rcs == [0] * PROCESSES, _consoles(workdir)


def _config(path_arg, **mesh):
  module = {MLP: mlp_synthetic, GPT: gpt2_bytes}[path_arg]
  config = module.get_config(path_arg.partition(":")[2])
  with config.unlocked():
    config.mesh.update(mesh)
  return config


def _reference(config, steps):
  """Losses and model of a single-process run on 4 devices (the cluster's global batch)."""
  run = loop.build(run_config.parse(config))
  losses = [float(step.train_step(run.model, run.optimizer,
                                  sharding.shard_batch(run.task.train_batch(i), run.mesh),
                                  run.task.loss)) for i in range(1, steps + 1)]
  return np.array(losses), run.model


def _losses(workdir):
  return np.array([r["train_loss"] for r in runfiles.read_metrics(str(workdir))])


def _restored(config, workdir):
  """(step, params) of the newest checkpoint, restored into this single process's mesh."""
  run = loop.build(run_config.parse(config))
  meta = checkpoint.Checkpointer(str(workdir)).restore_latest(run.model, run.optimizer)
  return meta["step"], jax.tree.leaves(nnx.state(run.model, nnx.Param))


def _assert_params_close(a, b, atol):
  for x, y in zip(a, b, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def _check_against_one_process(workdir, config_arg, mesh, steps, checkpoints):
  """Losses equal the single-process run's (so each host fed its own rows), the checkpoints
  exist once per step with both processes' shards and restore on one process to the reference's
  parameters, and only process 0 wrote the run files."""
  config = _config(config_arg, **{k: 4 if v == -1 else v for k, v in mesh.items()})
  with config.unlocked():
    config.steps = steps
  reference, model = _reference(config, steps)
  np.testing.assert_allclose(_losses(workdir), reference, atol=1e-5, rtol=0)
  assert sorted(os.listdir(workdir / "checkpoints"), key=int) == [str(s) for s in checkpoints]
  for part in ("model", "optimizer"):
    assert {f"ocdbt.process_{i}" for i in range(PROCESSES)} <= set(
        os.listdir(workdir / "checkpoints" / str(steps) / part))
  saved_step, params = _restored(config, workdir)   # 2 processes -> 1
  assert saved_step == steps
  _assert_params_close(params, jax.tree.leaves(nnx.state(model, nnx.Param)), atol=1e-5)
  assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "logs", "metrics.jsonl"]
  assert os.listdir(workdir / "logs") == ["process_1.txt"]   # process 0 keeps the console
  assert "[process=1]" in (workdir / "logs" / "process_1.txt").read_text()   # orbax's log lines
  return config


@pytest.mark.slow
def test_gpt2_on_data_parallel_hosts_each_fsdp_matches_one_process(tmp_path):
  """GPT-2 with the data axis across the hosts and FSDP within each host."""
  mesh = dict(data=2, fsdp=2)
  _run(tmp_path, GPT, "--config.checkpoint_every=20", *[f"--config.mesh.{k}={v}" for k, v in mesh.items()])
  _check_against_one_process(tmp_path, GPT, mesh, steps=20, checkpoints=[20])


@pytest.mark.slow
def test_fsdp_cluster_preempted_on_one_host_stops_at_one_step_and_resumes_exactly(tmp_path):
  """MLP with FSDP across both hosts. A straight run matches one process; a second one,
  SIGTERMed on host 1 only, saves one step on both hosts, exits 143, and resumes bit for bit
  (on 2 processes) or to within float rounding (on 1 process, from the same checkpoint)."""
  steps, args = 40, ["--config.steps=40", "--config.checkpoint_every=10", "--config.mesh.data=1",
                      "--config.mesh.fsdp=-1"]
  straight, preempted = tmp_path / "straight", tmp_path / "preempted"
  straight_procs = _launch(straight, MLP, *args)
  procs = _launch(preempted, MLP, *args)
  t0 = time.time()
  while len(runfiles.read_metrics(str(preempted))) < 3:
    assert all(p.poll() is None for p in procs), _consoles(preempted)
    assert time.time() - t0 < 600, _consoles(preempted)
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)   # a preemption notice to one host only
  assert _wait(procs, preempted) == [143] * PROCESSES, _consoles(preempted)
  stopped = [line for i in range(PROCESSES)
             for line in open(preempted / "logs" / f"process_{i}.txt" if i else f"{preempted}.console_0")
             if line.startswith("SIGTERM: saved the checkpoint at step")]
  assert len(stopped) == PROCESSES and len(set(stopped)) == 1, stopped
  at = int(re.search(r"step (\d+)", stopped[0]).group(1))
  assert 3 <= at < steps and str(at) in os.listdir(preempted / "checkpoints")
  one_process = tmp_path / "one_process"   # the same checkpoint, resumed on 1 process x 4 devices
  shutil.copytree(preempted, one_process)
  _run(preempted, MLP, *args)
  assert "resuming from the checkpoint at step" in open(f"{preempted}.console_0").read()

  assert _wait(straight_procs, straight) == [0] * PROCESSES, _consoles(straight)
  config = _check_against_one_process(straight, MLP, dict(data=1, fsdp=-1), steps, [30, 40])
  step_a, params_a = _restored(config, straight)
  step_b, params_b = _restored(config, preempted)
  assert step_a == step_b == steps
  _assert_params_close(params_a, params_b, atol=0)   # same layout: bit for bit
  assert [r["step"] for r in runfiles.read_metrics(str(preempted))] == list(range(1, steps + 1))
  np.testing.assert_array_equal(_losses(preempted), _losses(straight))
  with config.unlocked():
    config.log_every, config.eval_every = 1, 1000
  loop.train_and_evaluate(run_config.parse(config), str(one_process))   # 2 processes -> 1
  np.testing.assert_allclose(_losses(one_process), _losses(straight), atol=1e-5, rtol=0)


def test_unreachable_coordinator_and_mesh_not_spanning_the_cluster_are_clear_errors(tmp_path,
                                                                                     monkeypatch):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
             STRUX_NUM_PROCESSES="2", STRUX_PROCESS_ID="1", STRUX_COORDINATOR_TIMEOUT="3")
  out = subprocess.run([sys.executable, "-m", "experiments.main", f"--config={MLP}",
                        f"--workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: could not reach the JAX coordinator at 127.0.0.1:") and \
      "STRUX_COORDINATOR_TIMEOUT=3s" in last, out.stderr[-2000:]

  monkeypatch.setattr(jax, "process_count", lambda: 2)   # 8 devices as 2 hosts x 4
  monkeypatch.setattr(jax, "local_device_count", lambda: 4)
  with pytest.raises(ConfigError, match=re.escape(
      "config.mesh {'data': 3, 'fsdp': 2, 'tensor': 1} uses 6 of the 8 devices of 2 processes "
      "(4 each); on several processes the mesh must span every device (set one axis to -1)")):
    sharding.make_mesh(run_config.parse(_config(MLP, data=3, fsdp=2)).mesh)
