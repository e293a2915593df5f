"""Sweeps: each file defines CONFIG (a config path) and get_sweep(arg) -> list of runs.

A run is a dict of dotted config overrides; the optional key 'arg' is the config's
``get_config`` argument. ``product`` and ``zipped`` build grids.
"""

import itertools


def product(**axes) -> list[dict]:
  """Every combination of the values of ``axes`` (keys are dotted config paths or 'arg')."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def zipped(**axes) -> list[dict]:
  """The i-th values of every axis together; all axes must have the same length."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) != 1:
    raise ValueError(f"zipped axes must have equal lengths, got { {k: len(v) for k, v in axes.items()} }")
  return [dict(zip(axes, values)) for values in zip(*axes.values())]
