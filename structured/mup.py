"""Structure-aware muP (Compute Better Spent): per-core init and learning-rate multipliers.

Every rule works on the cores a layer reports through ``cores()``, so a new family gets muP
for free. Parametrizations:
  - 'mup': each core's init std = fan_in^-1/2 min(1, sqrt(fan_out / fan_in)) (set at
    construction by ``init_core``), the last core of residual-branch output projections and
    of the readout is zero, and Adam's learning rate of a core is multiplied by
    (d_in_base / fan_in_core) / n_cores, where d_in_base is the layer's input width in the
    base model (the model at ``base_width``).
  - 'standard': every core's std = fan_in^-1/2 and every multiplier is 1.
Vectors (biases, norms) keep multiplier 1.
"""

from __future__ import annotations

import jax
from flax import nnx

from structured.base import StructuredLinear, StructureError, mup_init_std

PARAMETRIZATIONS = ("mup", "standard")
ZERO_INIT_ROLES = ("residual_out", "readout")


def structured_layers(model: nnx.Module) -> dict[tuple, StructuredLinear]:
  """Every structured layer of ``model`` by its path."""
  return {tuple(path): node for path, node in nnx.iter_graph(model)
          if isinstance(node, StructuredLinear)}


def _check(parametrization: str):
  if parametrization not in PARAMETRIZATIONS:
    raise StructureError(f"unknown parametrization '{parametrization}'; valid: {list(PARAMETRIZATIONS)}")


def apply_init(model: nnx.Module, parametrization: str) -> None:
  """Rescales the cores built at muP std to ``parametrization`` and zeroes muP's zero-init cores."""
  _check(parametrization)
  for layer in structured_layers(model).values():
    cores = layer.cores()
    for core in cores:
      param = getattr(layer, core.name)
      if parametrization == "standard":
        param[...] = param[...] * (core.fan_in**-0.5 / mup_init_std(core.fan_in, core.fan_out))
    if parametrization == "mup" and layer.role in ZERO_INIT_ROLES:
      last = getattr(layer, cores[-1].name)
      last[...] = last[...] * 0.0


def lr_multipliers(model: nnx.Module, base_model: nnx.Module, parametrization: str) -> dict[tuple, float]:
  """Adam learning-rate multiplier of every core, keyed by the core's parameter path.

  ``base_model`` is the same architecture at the base width (an abstract ``nnx.eval_shape``
  model is enough): it supplies each layer's d_in_base. Parameters not listed get 1.
  """
  _check(parametrization)
  base_layers = structured_layers(base_model)
  mults = {}
  for path, layer in structured_layers(model).items():
    cores = layer.cores()
    for core in cores:
      if parametrization == "standard":
        mult = 1.0
      else:
        mult = base_layers[path].d_in / core.fan_in / len(cores)
      mults[path + (core.name,)] = mult
  return mults


def describe(model: nnx.Module, mults: dict[tuple, float]) -> str:
  """A table of every core: path, shape, fan-in, fan-out, init std and lr multiplier."""
  rows = [f"{'core':44s} {'shape':>18s} {'fan_in':>7s} {'fan_out':>7s} {'std':>9s} {'lr_mult':>9s}"]
  for path, layer in structured_layers(model).items():
    for core in layer.cores():
      w = getattr(layer, core.name)[...]
      name = "/".join(map(str, path + (core.name,)))
      rows.append(f"{name:44s} {str(tuple(w.shape)):>18s} {core.fan_in:7d} {core.fan_out:7d} "
                  f"{float(jax.numpy.std(w)):9.3g} {mults.get(path + (core.name,), 1.0):9.3g}")
  return "\n".join(rows)
