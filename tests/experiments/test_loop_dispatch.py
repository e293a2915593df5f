"""The loop dispatches ahead: steps that neither log, evaluate, save nor stop read nothing from
the device, and the on-device non-finite guard still stops a run at the first bad step and
tensor, before any checkpoint after it. Also the ``profile_steps`` trace."""

import contextlib
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import runfiles
from configs import mlp_synthetic
from experiments import config as run_config
from experiments import errors
from experiments.tasks.synthetic import TeacherStudent
from experiments.train import checkpoint, loop, preemption, step as steps
from experiments.train.guard import Guard, tensor_names

ARRAY = type(jnp.zeros(()))


def _config(arg="runlocal", **top):
  config = mlp_synthetic.get_config(arg)   # 20 steps of batch 32; log 5, eval 10, checkpoint 10
  config.update(top)
  return config


@pytest.fixture
def quiet_steps_disallow_reads(monkeypatch):
  """Wraps the loop's train step so that from the call of each quiet step (``quiet(step)``)
  until the next step is called, a device-to-host read fails: jax's transfer guard, and on CPU
  (whose zero-copy reads the runtime lets through) also ``Array._value``, behind float(), int(),
  bool(), format(), tolist() and jax.device_get. Returns the steps that ran quiet."""
  value = ARRAY._value

  def guarded_value(array):
    if jax.config.jax_transfer_guard_device_to_host == "disallow":   # thread-local: the loop's
      raise AssertionError("device-to-host transfer on a step that does not need the host")
    return value.fget(array)

  monkeypatch.setattr(ARRAY, "_value", property(guarded_value))
  train_step, guard, ran = steps.guarded_train_step, contextlib.ExitStack(), []

  def wrap(quiet):
    def step_fn(*args, **kwargs):
      guard.close()
      step = len(ran) + 1   # the runs here start at step 1
      ran.append(step)
      if quiet(step):
        guard.enter_context(jax.transfer_guard_device_to_host("disallow"))
      return train_step(*args, **kwargs)
    monkeypatch.setattr(steps, "guarded_train_step", step_fn)
    return ran

  yield wrap
  guard.close()


def _quiet(config):
  return lambda s: s != config.steps and all(s % every for every in (
      config.log_every, config.eval_every, config.checkpoint_every))


def test_steps_that_do_not_log_read_nothing_from_the_device(tmp_path, quiet_steps_disallow_reads):
  """Sparse layers whose masks move every 3 steps, gradients accumulated over 2 microbatches
  (the NaN tests below run plain steps under the same guard)."""
  config = _config("runlocal,kind=sparse,density=0.25", steps=12, microbatches=2, log_every=4)
  config.sparsity.update(method="rigl", density=0.25, delta_t=3)
  config = run_config.parse(config)
  ran = quiet_steps_disallow_reads(_quiet(config))
  loop.train_and_evaluate(config, str(tmp_path))
  assert ran == list(range(1, 13))
  rows = runfiles.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [4, 8, 10, 12]   # the other 8 steps ran quiet
  assert all(np.isfinite(r["train_loss"]) for r in rows) and rows[-1]["final"]
  assert [r["density"] for r in rows] == pytest.approx([0.25] * 4, abs=0.01)


def _poison_train_batch(monkeypatch, bad_step):
  clean = TeacherStudent.train_batch
  poisoned = lambda self, step: {k: v * np.nan for k, v in clean(self, step).items()}
  monkeypatch.setattr(TeacherStudent, "train_batch",
                      lambda self, step: (poisoned if step == bad_step else clean)(self, step))


@pytest.mark.parametrize("seen_at, top, sigterm_at, saved", [
    (14, {"log_every": 20, "eval_every": 20, "checkpoint_every": 7}, None, [7]),   # a checkpoint
    (13, {}, 13, [10])])   # SIGTERM at a step that neither logs nor saves
def test_nan_at_a_quiet_step_stops_at_the_next_sync_naming_that_step(
    seen_at, top, sigterm_at, saved, tmp_path, monkeypatch, quiet_steps_disallow_reads):
  config = run_config.parse(_config(**top))
  _poison_train_batch(monkeypatch, 12)
  monkeypatch.setattr(preemption.Notice, "__call__", lambda self, step: step == sigterm_at)
  ran = quiet_steps_disallow_reads(lambda s: _quiet(config)(s) and s != sigterm_at)
  with pytest.raises(errors.NonFiniteError) as stop:
    loop.train_and_evaluate(config, str(tmp_path))
  first_param = tensor_names(nnx.state(loop.build(config).model, nnx.Param))[0]
  assert str(stop.value).startswith(f"non-finite gradient at step 12 (loss nan, first non-finite "
                                    f"gradient: {first_param}; seen at step {seen_at})")
  assert ran[-1] == seen_at   # the steps after 12 ran on, their results never saved
  assert checkpoint.Checkpointer(str(tmp_path)).manager.all_steps() == saved
  *rows, last = runfiles.read_metrics(str(tmp_path))
  assert all(r["step"] < 12 for r in rows)
  assert last == {"step": 12, "examples": 12 * config.batch_size, "error": str(stop.value)}


def test_guard_keeps_the_first_non_finite_step_and_tensor():
  params = {"a": jnp.zeros(2), "b": {"c": jnp.zeros((2, 2)), "d": jnp.zeros(3)}}
  guard = jax.jit(Guard.update)
  with_nan = lambda *paths: {"a": params["a"] * (np.nan if "a" in paths else 1), "b": {
      k: v * (np.inf if f"b/{k}" in paths else 1) for k, v in params["b"].items()}}
  g = Guard.start(params)
  g = guard(g, jnp.int32(1), jnp.float32(0.5), params)
  assert g.first_bad() is None
  g = guard(g, jnp.int32(2), jnp.float32(np.nan), params)   # the loss only
  g = guard(g, jnp.int32(3), jnp.float32(1.0), with_nan("a"))
  step, loss, tensor = g.first_bad()
  assert (step, np.isnan(loss), tensor) == (2, True, None)
  g = guard(Guard.start(params), jnp.int32(4), jnp.float32(1.0), with_nan("b/d", "b/c"))
  g = guard(g, jnp.int32(5), jnp.float32(np.nan), with_nan("a"))
  assert g.first_bad() == (4, 1.0, "b/c")


def test_guard_names_the_block_of_a_stacked_tensor():
  params = {"attn": {"stacked": {"w": jnp.zeros((3, 2, 2))}}, "embed": jnp.zeros(4)}
  g = Guard.start(params)
  assert g.names == ("attn/0/w", "attn/1/w", "attn/2/w", "embed")   # the unrolled layout's names
  bad = {"attn": {"stacked": {"w": params["attn"]["stacked"]["w"].at[1, 0, 1].set(np.nan)}},
         "embed": params["embed"]}
  g = jax.jit(Guard.update)(g, jnp.int32(7), jnp.float32(2.0), bad)
  assert g.first_bad() == (7, 2.0, "attn/1/w")


def test_profile_steps_writes_a_trace_of_those_steps(tmp_path):
  loop.train_and_evaluate(run_config.parse(_config(steps=4, checkpoint_every=0,
                                                   profile_steps="2-3")), str(tmp_path))
  assert glob.glob(os.path.join(tmp_path, "profile", "**", "*.xplane.pb"), recursive=True)


@pytest.mark.parametrize("value", ["3", "5-2", "0-3", "2-21", " 2-3", "a-b", 5, (2, 3)])
def test_bad_profile_steps_are_one_error_naming_the_key(value):
  source = dict(_config().to_dict(), profile_steps=value)   # as a sweep or config.json gives it
  with pytest.raises(errors.ConfigError, match=r"config key 'profile_steps'=.* is invalid; valid: "
                     r"'' \(off\) or 'FIRST-LAST' with 1 <= FIRST <= LAST <= steps \(20\)"):
    run_config.parse(source)
  assert run_config.parse(_config(profile_steps="20-20")).profile_steps == (20, 20)
  assert run_config.parse(_config()).profile_steps is None
