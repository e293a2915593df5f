"""Device mesh, parameter and batch shardings with JAX's own machinery.

The mesh has axes ('data', 'fsdp', 'tensor') from ``config.mesh`` (-1 = all remaining
devices). Batches split their leading dim over ('data', 'fsdp'); with fsdp > 1 every
parameter is also split along its largest dimension divisible by the fsdp size (ZeRO-3 style:
XLA gathers it for the matmul and reduce-scatters its gradient). Tensor parallelism is
reserved in the mesh; today its size must be 1.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments.errors import ConfigError
from experiments.train.paths import path_key
from models import stack

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh sizes per axis of ``AXES``; -1 takes all remaining devices."""
  data: int
  fsdp: int
  tensor: int


def make_mesh(cfg: MeshConfig) -> jax.sharding.Mesh:
  sizes = [getattr(cfg, a) for a in AXES]
  n = jax.device_count()
  if sizes.count(-1) > 1:
    raise ConfigError(f"config.mesh: at most one axis may be -1, got {dict(zip(AXES, sizes))}")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % fixed:
      raise ConfigError(f"config.mesh {dict(zip(AXES, sizes))}: {n} devices are not divisible by {fixed}")
    sizes[sizes.index(-1)] = n // fixed
  if math.prod(sizes) > n:
    raise ConfigError(f"config.mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices; "
                      f"{n} are available")
  if sizes[2] != 1:
    raise ConfigError("config.mesh.tensor must be 1: tensor parallelism is not implemented yet")
  hosts = jax.process_count()
  if hosts > 1 and math.prod(sizes) != n:
    raise ConfigError(f"config.mesh {dict(zip(AXES, sizes))} uses {math.prod(sizes)} of the {n} "
                      f"devices of {hosts} processes ({jax.local_device_count()} each); on several "
                      "processes the mesh must span every device (set one axis to -1)")
  # Process-major order: host i's devices hold rows block i of the batch (see shard_batch).
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))[: math.prod(sizes)]
  return jax.sharding.Mesh(np.array(devices).reshape(sizes), AXES)


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch(mesh, batch_size: int, microbatches: int = 1, what: str = "batch_size") -> None:
  """Every device gets the same number of rows of every microbatch."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]   # microbatches >= 1: experiments/config.RANGES
  if batch_size % (shards * microbatches):
    raise ConfigError(
        f"{what}={batch_size} is not divisible by the data-parallel size {shards} (mesh data x "
        f"fsdp) x microbatches={microbatches}; use a multiple of {shards * microbatches}")


def shard_batch(batch: dict, mesh) -> dict:
  """This host's rows of the global batch (each task gives a host only its own rows, see
  experiments/tasks/rows.py) as global arrays split over the batch axes."""
  sharding = batch_sharding(mesh)
  count = jax.process_count()

  def put(v):
    v = np.asarray(v)
    return jax.make_array_from_process_local_data(sharding, v, (len(v) * count, *v.shape[1:]))

  return {k: put(v) for k, v in batch.items()}


def param_spec(shape: tuple[int, ...], fsdp: int, stacked: bool = False) -> P:
  """Split the largest dim divisible by ``fsdp`` over 'fsdp' (not a stacked variable's block
  axis, which the scan walks); replicate if none is."""
  if fsdp > 1:
    for dim in sorted(range(int(stacked), len(shape)), key=lambda d: -shape[d]):
      if shape[dim] % fsdp == 0:
        return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
  return P()


def place(node: nnx.Module | nnx.Optimizer, mesh) -> None:
  """Places every variable of a model or optimizer on ``mesh`` (FSDP-split when mesh.fsdp > 1,
  else replicated), so checkpoints restore onto the same shardings."""
  state = nnx.state(node)
  fsdp = mesh.shape["fsdp"]
  shardings = jax.tree_util.tree_map_with_path(lambda path, x: NamedSharding(
      mesh, param_spec(x.shape, fsdp, stack.is_stacked(path_key(path)))), state)
  nnx.update(node, jax.device_put(state, shardings))
