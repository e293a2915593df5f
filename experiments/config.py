"""The typed config boundary: the ConfigDict (configs/*.py, CLI overrides, sweeps) becomes frozen
dataclasses here, once, before any work or file write. Below this module nothing reads a
ConfigDict and no setting has a fallback default: every key comes from the config file
(configs/common.py holds the shared defaults), unknown and missing keys are one ``ConfigError``
naming the key, and each section checks its own values. Every numeric key's range is checked
here as it is read (``RANGES``), so a bad value is one ConfigError naming the key, the value and
what is allowed.

Sections and their owners: ``model`` -> models.factory.ModelConfig, ``data`` ->
experiments.tasks.build (one dataclass per task), ``optim`` -> experiments.train.optim.OptimConfig,
``mup`` -> structured.mup.MuP (built with the optimizer's rule), ``mesh`` ->
experiments.train.sharding.MeshConfig, ``wandb`` -> experiments.train.writers.WandbConfig,
``sparsity`` -> experiments.sparsity.schedule.SparsityConfig.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Mapping

from configs.structure import StructureSpec
from experiments.errors import ConfigError
from experiments.sparsity.schedule import SparsityConfig
from experiments.tasks.build import DATA_SECTIONS
from experiments.train.optim import OptimConfig
from experiments.train.sharding import MeshConfig
from experiments.train.writers import WandbConfig
from models.factory import ModelConfig
from structured.mup import MuP


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One run: duration and cadences (steps), its sections, and ``source``: the config as plain
  dicts, exactly what ``config.json`` records."""

  seed: int
  steps: int
  batch_size: int
  microbatches: int   # gradient accumulation: the batch scanned in this many pieces
  log_every: int
  eval_every: int
  checkpoint_every: int
  max_to_keep: int
  profile_steps: tuple[int, int] | None   # (first, last) step traced by jax.profiler, or None
  model: ModelConfig
  data: Any
  optim: OptimConfig
  mup: MuP
  mesh: MeshConfig
  wandb: WandbConfig
  sparsity: SparsityConfig
  source: dict = dataclasses.field(compare=False, repr=False)


def _at_least(low: int, note: str = ""):
  return (lambda v: v >= low), f">= {low}{note}"


def _between(low: float, high: float, high_open: bool = False):
  return ((lambda v: low <= v < high) if high_open else (lambda v: low <= v <= high),
          f"in [{low}, {high}{')' if high_open else ']'}")


_DEVICES = (lambda v: v == -1 or v >= 1), "-1 (all remaining devices) or >= 1"

# (test, what is allowed) of every numeric key; the sections check the keys not listed
# (model.dropout, mup.base_depth) and the choices (names, modes) themselves.
RANGES = {
    "seed": _at_least(0), "steps": _at_least(1), "batch_size": _at_least(1),
    "microbatches": _at_least(1),
    "log_every": _at_least(1), "eval_every": _at_least(1),
    "checkpoint_every": _at_least(0, " (0 = no checkpoints)"), "max_to_keep": _at_least(1),
    "model.width": _at_least(1), "model.depth": _at_least(1), "model.expansion": _at_least(1),
    "model.heads": _at_least(0, " (0 where the model has none)"),
    "model.patch": _at_least(0, " (0 where the model has none)"),
    "optim.lr": ((lambda v: v > 0), "> 0"), "optim.b1": _between(0, 1, high_open=True),
    "optim.b2": _between(0, 1, high_open=True), "optim.eps": _at_least(0),
    "optim.weight_decay": _at_least(0), "optim.grad_clip": _at_least(0, " (0 = off)"),
    "optim.warmup_steps": _at_least(0), "optim.final_lr_frac": _between(0, 1),
    "optim.decay_frac": _between(0, 1),
    "mup.base_width": _at_least(1),
    "mesh.data": _DEVICES, "mesh.fsdp": _DEVICES, "mesh.tensor": _DEVICES,
    "data.d_in": _at_least(1), "data.d_out": _at_least(1), "data.width": _at_least(1),
    "data.depth": _at_least(1), "data.eval_examples": _at_least(0, " (0 = the whole eval split)"),
    "data.seed_offset": _at_least(0), "data.seq_len": _at_least(1), "data.max_bytes": _at_least(1),
    "data.eval_batches": _at_least(1), "data.vocab": _at_least(1),
    "data.image_size": _at_least(0, " (0 = the images' own size)"), "data.crop": _at_least(0),
    "data.mixup_alpha": _at_least(0), "data.label_smoothing": _between(0, 1, high_open=True),
    "data.eval_batch": _at_least(1), "data.read_threads": _at_least(1),
}


def _check_range(value, key: str):
  """``value`` unless ``key`` has a range it is outside of (or it is a NaN/inf float)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return value
  test, allowed = RANGES.get(key, (lambda v: True, ""))
  if not (math.isfinite(value) and test(value)):
    raise ConfigError(f"config key '{key}'={value!r} is out of range; allowed: "
                      f"{allowed or 'a finite number'}")
  return value


def _profile_steps(value, steps: int) -> tuple[int, int] | None:
  """``profile_steps``: '' (off) or 'FIRST-LAST' with 1 <= FIRST <= LAST <= steps."""
  if value == "":
    return None
  match = re.fullmatch(r"(\d+)-(\d+)", value) if isinstance(value, str) else None
  if not (match and 1 <= int(match[1]) <= int(match[2]) <= steps):
    raise ConfigError(f"config key 'profile_steps'={value!r} is invalid; valid: '' (off) or "
                      f"'FIRST-LAST' with 1 <= FIRST <= LAST <= steps ({steps}), e.g. '10-15'")
  return int(match[1]), int(match[2])


def _fields(cls, mapping: Mapping, where: str, skip=()) -> dict[str, Any]:
  """``mapping``'s values for the fields of ``cls``, checked: no unknown or missing key, and
  each value of the field's type (an int is accepted for a float)."""
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
  unknown = sorted(set(mapping) - set(fields))
  if unknown:
    raise ConfigError(f"unknown config key '{_join(where, unknown[0])}'; valid keys under "
                      f"{where or 'the top level'}: {sorted(fields)}")
  values = {}
  for name, field in fields.items():
    key = _join(where, name)
    if name not in mapping:
      if field.default is dataclasses.MISSING:
        raise ConfigError(f"config key '{key}' is missing; add it to the config (configs/common.py "
                          f"holds the shared defaults)")
      continue
    values[name] = _check_range(_check_type(mapping[name], hints[name], key), key)
  return values


def _check_type(value, kind, key: str):
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if kind in (int, float, bool, str) and (type(value) is not kind):
    raise ConfigError(f"config key '{key}' must be {kind.__name__}, got {value!r}")
  return value


def _join(where: str, key: str) -> str:
  return f"{where}.{key}" if where else key


def _plain(node) -> Any:
  return {k: _plain(v) for k, v in node.items()} if hasattr(node, "items") else node


def parse_model(node: Mapping) -> ModelConfig:
  """The typed model section of a ConfigDict's ``model``."""
  values = _fields(ModelConfig, {k: v for k, v in node.items() if k not in ("kind", "structure")},
                   "model", skip=("structure",))
  if "kind" not in node:
    raise ConfigError("config key 'model.kind' is missing")
  if "structure" not in node:
    raise ConfigError("config key 'model.structure' is missing")
  values["structure"] = StructureSpec.from_mapping({**dict(node["structure"]), "kind": node["kind"]},
                                                   "model.structure")
  try:
    values["overrides"] = tuple(sorted(
        (layer_type, StructureSpec.from_mapping(spec, f"model.overrides.{layer_type}"))
        for layer_type, spec in dict(node["overrides"]).items()))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return ModelConfig(**values)


def _data(node: Mapping):
  name = node["name"] if "name" in node else None
  if name not in DATA_SECTIONS:
    raise ConfigError(f"data.name='{name}' is unknown; valid: {list(DATA_SECTIONS)}")
  return DATA_SECTIONS[name](**_fields(DATA_SECTIONS[name], node, "data"))


def parse(config: Mapping) -> RunConfig:
  """The typed, checked run config of a ConfigDict (or nested dict)."""
  config = _plain(config)
  sections = {"model", "data", "optim", "mup", "mesh", "wandb", "sparsity"}
  top = _fields(RunConfig, {k: v for k, v in config.items() if k not in sections}, "",
                skip=sections | {"source"})
  top["profile_steps"] = _profile_steps(config["profile_steps"], top["steps"])
  for name in sections:
    if name not in config:
      raise ConfigError(f"config section '{name}' is missing")
  optim = OptimConfig(**_fields(OptimConfig, config["optim"], "optim"))
  mup = MuP(rule=optim.mup_rule, **_fields(MuP, config["mup"], "mup", skip=("rule",)))
  model = parse_model(config["model"])
  sparsity = SparsityConfig(**_fields(SparsityConfig, config["sparsity"], "sparsity"))
  if model.scan_layers and sparsity.method != "none":
    raise ConfigError(f"sparsity.method='{sparsity.method}' moves masks per layer, which stacked "
                      "blocks do not hold apart; set model.scan_layers=False (or method 'none': "
                      "a sparse kind with its fixed mask scans)")
  return RunConfig(**top, model=model, data=_data(config["data"]), optim=optim, mup=mup,
                   mesh=MeshConfig(**_fields(MeshConfig, config["mesh"], "mesh")),
                   wandb=WandbConfig(**_fields(WandbConfig, config["wandb"], "wandb")),
                   sparsity=sparsity, source=config)
