"""Where a sweep's runs execute: ``local`` (subprocesses here), ``ray`` (one Ray task per run)
or ``slurm`` (one submitit job per run). Each backend's ``execute(points, options)`` yields
``(point, Outcome)`` as runs end; every run goes through ``point.run_point``, which makes a run
exactly-once however often a sweep is killed and restarted."""

from __future__ import annotations

import dataclasses
import importlib
import os

NAMES = ("local", "ray", "slurm")
_MODULES = {"local": "local", "ray": "ray_backend", "slurm": "slurm"}
_EXTRAS = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}


class BackendError(RuntimeError):
  """A backend that cannot run here (its engine is missing); the message says what to install."""


@dataclasses.dataclass(frozen=True)
class Resources:
  """What one run asks of its scheduler: CPUs and GPUs per process, TPU chips per host, hosts."""
  cpus: int = 1
  gpus: int = 0
  tpus: int = 0
  nodes: int = 1


@dataclasses.dataclass(frozen=True)
class Point:
  """One sweep point: its name, workdir and the ``experiments.main`` command line."""
  name: str
  workdir: str
  command: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Outcome:
  rc: int
  seconds: float
  ran: bool   # False: an earlier, killed attempt of the sweep finished it meanwhile


def load(name: str):
  """The backend module ``name``; a missing engine is a BackendError naming the extra."""
  if name not in NAMES:
    raise BackendError(f"--backend={name!r} is unknown; valid: {list(NAMES)}")
  # submitit's import runs logging.config.dictConfig, which closes every handler already set up
  # (absl's among them); leave logging alone
  os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
  if name in _EXTRAS:
    package, extra = _EXTRAS[name]
    try:
      importlib.import_module(package)
    except ImportError as e:
      raise BackendError(f"the {name} backend needs {package}, which is not installed: "
                         f"pip install -e '.[{extra}]'") from e
  return importlib.import_module(f"experiments.backends.{_MODULES[name]}")
