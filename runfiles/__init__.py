"""The run-file format, owned here: what a run writes to its workdir and how it is read back.

A workdir holds ``config.json`` (the run's config, one JSON object) and ``metrics.jsonl`` (one
JSON object a line: ``step``, ``examples`` or ``tokens``, cumulative ``flops``, ``train_loss``,
eval metrics, ``params``, ...; the last line of a finished run has ``"final": true``, a run stopped
by an error ends with a line holding ``"error"``). The trainer writes them, the sweep tool reads
them to skip finished runs, and analysis/ reads nothing else. Standard library only, so both sides
can import it.

One rule for bad lines: a last line cut short (a killed writer) is skipped; any other line that
is not a JSON object is reported with a ``RunFileError`` naming the file and line.
"""

from __future__ import annotations

import json
import os

CONFIG = "config.json"
METRICS = "metrics.jsonl"


class RunFileError(ValueError):
  """A run file that cannot be read; the message names the file, the line and what is wrong."""


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS)


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG)


def parse_metrics(lines: list[str], path: str = METRICS) -> list[dict]:
  """The records of ``metrics.jsonl`` lines; a truncated last line is skipped, others raise."""
  lines = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
  records = []
  for i, (n, line) in enumerate(lines):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if i == len(lines) - 1 and not line.endswith("\n"):
        break   # cut short by a kill: the writer appends whole lines
      raise RunFileError(f"{path}:{n} is not JSON ({e.msg}); the file is corrupted") from None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
      raise RunFileError(f"{path}:{n} is not a metrics record (a JSON object with an int 'step')")
    records.append(record)
  return records


def read_metrics(workdir: str) -> list[dict]:
  """Every record of the run's ``metrics.jsonl`` ([] if it does not exist)."""
  path = metrics_path(workdir)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return parse_metrics(f.readlines(), path)


def read_config(workdir: str) -> dict:
  """The run's ``config.json`` as a dict; RunFileError if it is missing, truncated or not an object."""
  path = config_path(workdir)
  try:
    with open(path) as f:
      config = json.load(f)
  except FileNotFoundError:
    raise RunFileError(f"{path} does not exist") from None
  except json.JSONDecodeError as e:
    raise RunFileError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); truncated?") from None
  if not isinstance(config, dict):
    raise RunFileError(f"{path} holds a {type(config).__name__}, not a JSON object")
  return config


def is_finished(workdir: str) -> bool:
  """Whether the run in ``workdir`` has written its final line."""
  records = read_metrics(workdir)
  return bool(records) and bool(records[-1].get("final"))


def write_line(f, record: dict) -> None:
  """Appends one whole record line to an open ``metrics.jsonl``."""
  f.write(json.dumps(record) + "\n")
