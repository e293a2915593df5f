"""StructureSpec: the one spelling of a structured-layer choice, with its one parser and printer.

Text form ``kind=btt,rank=1,cores=3`` (the same ``key=value`` list a config arg uses); mapping
form ``{'kind': 'btt', 'rank': 1, 'cores': 3}`` (``model.overrides`` entries, ConfigDicts).
Configs, sweeps, coord_check and the model factory all go through this module. Pure Python,
so configs stay free of jax.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Mapping


def parse_pairs(text: str | None) -> dict[str, Any]:
  """'kind=btt,rank=2,runlocal' -> {'kind': 'btt', 'rank': 2, 'runlocal': True}.

  Values are Python literals where they parse as one, else strings; a bare key means True.
  """
  out = {}
  for item in filter(None, (text or "").split(",")):
    key, has_value, value = item.partition("=")
    if not has_value:
      out[key.strip()] = True
      continue
    try:
      out[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key.strip()] = value
  return out


@dataclasses.dataclass(frozen=True)
class StructureSpec:
  """A family name and its hyperparameters (sorted, hashable)."""

  kind: str
  hparams: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any], where: str = "structure") -> StructureSpec:
    """``{'kind': ..., **hparams}``; ``where`` names the config key in the error."""
    mapping = dict(mapping)
    if not isinstance(mapping.get("kind"), str):
      raise ValueError(f"{where} needs a 'kind' (a family name), got {mapping}")
    kind = mapping.pop("kind")
    return cls(kind, tuple(sorted(mapping.items())))

  @classmethod
  def parse(cls, text: str) -> StructureSpec:
    """'kind=btt,rank=1' -> StructureSpec('btt', (('rank', 1),))."""
    return cls.from_mapping(parse_pairs(text), where=f"structure '{text}'")

  def to_mapping(self) -> dict[str, Any]:
    return {"kind": self.kind, **dict(self.hparams)}

  def __str__(self) -> str:
    return ",".join(f"{k}={v}" for k, v in self.to_mapping().items())
