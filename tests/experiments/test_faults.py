"""One fault test per data-loss case: unreadable checkpoints (the newest, all), a crash between
the metrics write and the checkpoint save of a step, a non-finite stop. Each checks that
``metrics.jsonl`` keeps every row it had and that the run either resumes exactly (same rows,
same final parameters) or stops with one clear message, changing nothing."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

import runfiles
from configs import mlp_synthetic
from experiments import config as run_config
from experiments import errors
from experiments.tasks.synthetic import TeacherStudent
from experiments.train import checkpoint, loop

CONFIG = run_config.parse(mlp_synthetic.get_config("runlocal"))   # 20 steps, checkpoints 10, 20


def _rows(workdir) -> list[dict]:
  """The metrics rows without their wall-clock ``time``."""
  return [{k: v for k, v in r.items() if k != "time"} for r in runfiles.read_metrics(str(workdir))]


def _params(workdir):
  run = loop.build(CONFIG)
  meta = checkpoint.Checkpointer(str(workdir)).restore_latest(run.model, run.optimizer)
  return meta["step"], jax.tree.leaves(nnx.state(run.model, nnx.Param))


def _assert_same_params(finished, workdir):
  (step_a, params_a), (step_b, params_b) = finished.params, _params(workdir)
  assert step_a == step_b == CONFIG.steps
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)


def _corrupt(step_dir) -> None:
  for root, _, files in os.walk(step_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")


def _files(workdir) -> dict[str, bytes]:
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


class Finished:
  """A run trained straight through: its workdir, rows and final parameters."""

  def __init__(self, workdir):
    self.workdir, self.rows, self.params = workdir, _rows(workdir), _params(workdir)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished")
  loop.train_and_evaluate(CONFIG, str(workdir))
  assert _rows(workdir)[-1]["final"]
  return Finished(workdir)


@pytest.fixture
def copy(finished, tmp_path):
  shutil.copytree(finished.workdir, tmp_path / "run")
  return tmp_path / "run"


def test_unreadable_newest_checkpoint_is_moved_aside_and_the_run_resumes_exactly(finished, copy):
  _corrupt(copy / "checkpoints" / "20")
  loop.train_and_evaluate(CONFIG, str(copy))   # resumes at 10 and saves step 20 again
  assert _rows(copy) == finished.rows
  _assert_same_params(finished, copy)
  aside = copy / checkpoint.UNREADABLE / "20"
  assert all(data == b"garbage" for data in _files(aside).values())   # kept, not written over


def test_every_checkpoint_unreadable_stops_with_one_message_and_changes_nothing(copy):
  _corrupt(copy / "checkpoints" / "10")
  _corrupt(copy / "checkpoints" / "20")
  before = _files(copy)
  with pytest.raises(errors.CheckpointError, match=r"every checkpoint in .* is unreadable \(steps "
                     r"\[10, 20\].*nothing was changed.*move .* aside or use another --workdir"):
    loop.train_and_evaluate(CONFIG, str(copy))
  assert _files(copy) == before   # metrics.jsonl and the checkpoints byte for byte


class Crash(Exception):
  pass


def test_crash_between_the_metrics_write_and_the_checkpoint_save_resumes_exactly(
    finished, tmp_path, monkeypatch):
  """The loop writes a step's row, then saves its checkpoint: a crash between them leaves the row
  without its checkpoint; the resumed run writes the same rows again, none twice."""
  save = checkpoint.Checkpointer.save

  def crash_at_20(self, step, *args):
    if step == 20:
      raise Crash
    save(self, step, *args)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", crash_at_20)
  with pytest.raises(Crash):
    loop.train_and_evaluate(CONFIG, str(tmp_path))
  assert _rows(tmp_path) == finished.rows   # the row of step 20 was written
  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  loop.train_and_evaluate(CONFIG, str(tmp_path))
  assert _rows(tmp_path) == finished.rows
  _assert_same_params(finished, tmp_path)


def test_non_finite_stop_leaves_an_error_line_and_the_rerun_resumes_exactly(
    finished, tmp_path, monkeypatch):
  clean = TeacherStudent.train_batch
  poisoned = lambda self, step: {k: v * np.nan for k, v in clean(self, step).items()}
  monkeypatch.setattr(TeacherStudent, "train_batch",
                      lambda self, step: (poisoned if step == 15 else clean)(self, step))
  with pytest.raises(errors.NonFiniteError, match="non-finite gradient at step 15") as stop:
    loop.train_and_evaluate(CONFIG, str(tmp_path))
  *kept, last = _rows(tmp_path)
  assert kept == [r for r in finished.rows if r["step"] < 15]
  assert last == {"step": 15, "examples": 15 * CONFIG.batch_size, "error": str(stop.value)}
  assert not runfiles.is_finished(str(tmp_path))
  monkeypatch.setattr(TeacherStudent, "train_batch", clean)   # the cause is gone: rerun
  loop.train_and_evaluate(CONFIG, str(tmp_path))
  assert _rows(tmp_path) == finished.rows
  _assert_same_params(finished, tmp_path)
