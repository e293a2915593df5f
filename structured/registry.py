"""Name -> family map, and the one place a structure spec becomes a layer."""

import importlib
import inspect
import os
import pkgutil

import jax.numpy as jnp
from flax import nnx

from structured.base import StructuredLinear, StructureError, core_std_rule


def _discover() -> dict[str, type[StructuredLinear]]:
  """Every StructuredLinear subclass defined in a module of this package that names its own
  ``kind`` (not a shared base such as ``tt.ModeChain``), by that kind.

  A new family is one new file: no list to keep in sync.
  """
  for module in pkgutil.iter_modules([os.path.dirname(__file__)]):
    importlib.import_module(f"structured.{module.name}")
  found, todo = {}, list(StructuredLinear.__subclasses__())
  while todo:
    cls = todo.pop()
    todo += cls.__subclasses__()
    if cls.__module__.startswith("structured.") and "kind" in vars(cls):
      found[cls.kind] = cls
  return dict(sorted(found.items()))


FAMILIES: dict[str, type[StructuredLinear]] = _discover()

_LAYER_ARGS = ("d_in", "d_out", "use_bias", "role", "rngs", "self")


def hyperparameters(kind: str) -> dict[str, object]:
  """The structure hyperparameters of a family and their defaults."""
  params = inspect.signature(family(kind).__init__).parameters
  return {n: p.default for n, p in params.items() if n not in _LAYER_ARGS}


def family(kind: str) -> type[StructuredLinear]:
  if kind not in FAMILIES:
    raise StructureError(f"unknown structure kind '{kind}'; valid kinds: {sorted(FAMILIES)}")
  return FAMILIES[kind]


def make(kind: str, d_in: int, d_out: int, *, rngs: nnx.Rngs, use_bias: bool = False,
         role: str = "hidden", mup=None, **hparams) -> StructuredLinear:
  """Builds a layer of family ``kind``; unknown hyperparameters are an error, not ignored.

  ``mup`` (a ``structured.mup.MuP``) sets the init in one phase: cores are drawn at its
  ``core_std`` and, where it says the layer's role starts at zero, its zero-init cores are zero.
  Without it, cores are drawn at the muP scale and none is zeroed.
  """
  valid = hyperparameters(kind)
  unknown = sorted(set(hparams) - set(valid))
  if unknown:
    raise StructureError(f"structure '{kind}' has no hyperparameter(s) {unknown}; "
                         f"valid: {sorted(valid) or 'none'}")
  if mup is None:
    return family(kind)(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs, **hparams)
  with core_std_rule(mup.core_std):
    layer = family(kind)(d_in, d_out, use_bias=use_bias, role=role, rngs=rngs, **hparams)
  if mup.starts_at_zero(role):
    for name in layer.zero_init_cores():
      getattr(layer, name)[...] = jnp.zeros_like(getattr(layer, name)[...])
  return layer
