"""The run-file format's one rule for bad lines, and its config reader."""

import json

import pytest

import runfiles


def _write(tmp_path, text):
  (tmp_path / runfiles.METRICS).write_text(text)
  return str(tmp_path)


def test_truncated_last_line_is_skipped(tmp_path):
  workdir = _write(tmp_path, '{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
  assert runfiles.read_metrics(workdir) == [{"step": 1, "loss": 2.0}]
  assert not runfiles.is_finished(workdir)


def test_bad_line_before_the_end_is_reported(tmp_path):
  workdir = _write(tmp_path, '{"step": 1}\n{"step": 2\n{"step": 3, "final": true}\n')
  with pytest.raises(runfiles.RunFileError, match=r"metrics.jsonl:2 is not JSON"):
    runfiles.read_metrics(workdir)


def test_a_complete_last_line_that_is_bad_is_reported(tmp_path):
  workdir = _write(tmp_path, '{"step": 1}\n[1, 2]\n')
  with pytest.raises(runfiles.RunFileError, match=r"metrics.jsonl:2 is not a metrics record"):
    runfiles.read_metrics(workdir)


def test_finished_and_missing(tmp_path):
  assert runfiles.read_metrics(str(tmp_path)) == []
  workdir = _write(tmp_path, '{"step": 1}\n\n{"step": 2, "final": true}\n')
  assert runfiles.is_finished(workdir)


@pytest.mark.parametrize("text, match", [("{\"a\": ", "not valid JSON"), ("[1]", "holds a list")])
def test_bad_config_is_one_error(tmp_path, text, match):
  (tmp_path / runfiles.CONFIG).write_text(text)
  with pytest.raises(runfiles.RunFileError, match=match):
    runfiles.read_config(str(tmp_path))
  (tmp_path / runfiles.CONFIG).write_text(json.dumps({"seed": 1}))
  assert runfiles.read_config(str(tmp_path)) == {"seed": 1}
