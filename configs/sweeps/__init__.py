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


def scaling_study(arg: str | None, name: str, families: dict, base: str, lrs, common: dict,
                  quick: dict, quick_widths: int = 2) -> list[dict]:
  """The two stages of a scaling study (``analysis.study`` runs both), from ``arg``:
  'lr' = ``base`` (a family at the muP base width) over the ``lrs`` grid; 'lr=<value>' = every
  family (arg -> widths) at that lr, the smallest widths of every family first so a study cut
  short still has them all; ',quick' applies ``quick`` and keeps ``quick_widths`` per family
  and the first 2 lrs."""
  options = dict(item.partition("=")[::2] for item in (arg or "").split(",") if item)
  if "lr" not in options:
    raise ValueError(f"{name} needs --sweep_arg 'lr' (the lr sweep) or 'lr=<tuned lr>' (the study); "
                     f"`python -m analysis.study` runs both")
  n_widths = quick_widths if "quick" in options else min(len(w) for w in families.values())
  if options["lr"] == "":
    runs = [{"arg": base, "optim.lr": lr} for lr in (lrs[:2] if "quick" in options else lrs)]
  else:
    runs = [{"arg": family, "model.width": widths[rank], "optim.lr": float(options["lr"])}
            for rank in range(n_widths) for family, widths in families.items()]
  return [{**run, **common, **(quick if "quick" in options else {})} for run in runs]
