"""What each masked layer's mask does over a run: its target, and how many entries every update
keeps or swaps. A frozen, hashable value built once on the host from the model's shapes and the
schedule; the jitted step takes it as a static argument and the accounting reads it."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.errors import ConfigError
from experiments.sparsity.schedule import Schedule, layer_densities
from structured import masked

MOVING = ("gmp", "set", "rigl", "srste", "spdf")   # methods that change masks during training
# why a method cannot keep a slot-stored layer's K blocks (MaskSpec.slots)
NOT_SLOTS = {"gmp": "changes how many blocks are kept", "spdf": "lifts the mask to dense"}


@dataclasses.dataclass(frozen=True)
class LayerPlan:
  path: tuple
  weight: str                        # the Param the mask gates
  block: int                         # weights per mask entry, per side
  n_m: tuple[int, int] | None
  cells: int                         # mask entries
  kept: int                          # mask entries kept at the target density
  counts: tuple[int, ...]            # per update: GMP keeps, SET/RigL swaps (drop = grow)
  slots: bool = False                # the weight is the K kept blocks (MaskSpec.slots)

  def count(self, update_index) -> jax.Array:
    """``counts[update_index]`` for a traced index (inside the jitted step)."""
    return jnp.asarray(self.counts, jnp.int32)[update_index]


@dataclasses.dataclass(frozen=True)
class Plan:
  schedule: Schedule
  layers: tuple[LayerPlan, ...]
  first: int                         # first update step (1-based)
  last: int                          # last update step; first > last: never
  every: int

  def update_steps(self) -> range:
    return range(self.first, self.last + 1, self.every)

  def is_update(self, step: jax.Array) -> jax.Array:
    """Whether the (traced, 1-based) ``step`` updates the masks."""
    return (step >= self.first) & (step <= self.last) & ((step - self.first) % self.every == 0)

  @property
  def probes(self) -> bool:
    """Whether update steps read dense gradients through ``masked.GradProbe``s (RigL on
    slot-stored layers, whose backward forms only the kept blocks' gradients)."""
    return self.schedule.method == "rigl" and any(lp.slots for lp in self.layers)

  def live_cells(self, layer: LayerPlan, step: int) -> int:
    """Mask entries kept after ``step``'s update (step 0: at init)."""
    method, done = self.schedule.method, [t for t in self.update_steps() if t <= step]
    if method == "gmp":
      return layer.counts[len(done) - 1] if done else layer.cells
    if method == "spdf" and done:
      return layer.cells
    return layer.kept


def _check(method: str, layers: dict) -> None:
  for path, layer in layers.items():
    spec, where = layer.mask_spec(), "/".join(map(str, path))
    if spec.slots and method in NOT_SLOTS:
      raise ConfigError(f"sparsity.method='{method}' {NOT_SLOTS[method]}, but layer {where} "
                        f"({layer.kind}) stores exactly its K kept blocks; use kind='sparse', "
                        f"block={spec.block} for '{method}' with block masks, or method 'static', "
                        f"'set' or 'rigl' on {layer.kind}")
    if method in MOVING and spec.slots and not spec.movable:
      raise ConfigError(f"sparsity.method='{method}' moves masks, but layer {where} "
                        f"({layer.kind}, impl={layer.impl!r}) takes static block coordinates; "
                        f"use impl='xla', or method 'static'")
    if method in MOVING and not spec.movable:
      raise ConfigError(f"sparsity.method='{method}' moves masks, but layer {where} "
                        f"({layer.kind}) stores its entries at fixed positions; use kind 'sparse' "
                        f"(block=... for block masks), or method 'static'")
    if spec.n_m and method in ("gmp", "set", "rigl"):
      raise ConfigError(f"sparsity.method='{method}' prunes freely, but layer {where} keeps "
                        f"{spec.n_m[0]}:{spec.n_m[1]}; for N:M use 'srste', 'static' or 'spdf'")
    if method == "srste" and not spec.n_m:
      raise ConfigError(f"sparsity.method='srste' is for N:M layers (kind 'nm_sparse'), but "
                        f"layer {where} is '{layer.kind}'")


def make(schedule: Schedule | None, model: nnx.Module) -> Plan | None:
  """The plan of every movable masked layer of ``model`` (by shapes only, never its values)."""
  if schedule is None:
    return None
  layers = masked.masked_layers(model)
  _check(schedule.method, layers)
  movable = {p: l for p, l in layers.items() if l.mask_spec().movable}
  if not movable:
    raise ConfigError(f"sparsity.method='{schedule.method}' needs masked layers, but the model "
                      f"has none; set model.kind='sparse' (or 'nm_sparse' for srste)")
  free = [p for p, l in movable.items() if not l.mask_spec().n_m]
  sizes = [movable[p].d_in * movable[p].d_out // movable[p].mask_spec().block**2 for p in free]
  fans = [(movable[p].d_in, movable[p].d_out) for p in free]
  densities = dict(zip(free, layer_densities(sizes, fans, schedule.density, schedule.distribution)))
  method = schedule.method
  if method == "spdf":
    first = last = max(1, schedule.switch_step)
    every = 1
  elif method == "static":
    first, last, every = 1, 0, 1
  else:
    steps = schedule.update_steps()
    first, last, every = (steps[0], steps[-1], schedule.delta_t) if steps else (1, 0, 1)
  update_steps = range(first, last + 1, every)
  plans = []
  for path, layer in movable.items():
    spec = layer.mask_spec()
    n_cells = layer.d_in * layer.d_out // spec.block**2
    kept = (n_cells * spec.n_m[0] // spec.n_m[1] if spec.n_m
            else max(1, round(densities[path] * n_cells)))
    if method == "gmp":
      counts = tuple(max(1, round(schedule.gmp_density(t, kept / n_cells) * n_cells))
                     for t in update_steps)
    elif method in ("set", "rigl"):
      counts = tuple(min(n_cells - kept, round(schedule.drop_fraction_at(t) * kept))
                     for t in update_steps)
    else:
      counts = ()
    plans.append(LayerPlan(path, spec.weight, spec.block, spec.n_m, n_cells, kept, counts,
                           spec.slots))
  return Plan(schedule, tuple(plans), first, last, every)
