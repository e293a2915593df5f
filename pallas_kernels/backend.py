"""Which route a Pallas op takes on this backend, and how its pallas_calls are parameterised.

A route is a kernel body plus whether it runs in the Pallas interpreter:
- body ``"tpu"``: compiled by Mosaic TPU. Kernels keep their intermediates in VMEM scratch.
- body ``"gpu"``: compiled by the Pallas **Triton** backend, chosen explicitly through
  ``plgpu_triton.CompilerParams`` (Mosaic GPU, the default GPU backend since jax 0.9, has no
  ``dot_general`` lowering; Triton is deprecated since jax 0.11 but still selectable). Triton has
  no scratch memory and cannot slice register values, so these bodies differ from the TPU ones.
- ``interpret=True`` runs a body in the interpreter on any backend: the GPU body on a GPU,
  otherwise ``INTERPRET_BODY`` (tests switch it to check the GPU body on CPU).
- no body (``None``): the op's pure-jnp ``reference.py``, with a one-line warning issued once per
  op and backend (CPU, or a GPU shape the Triton body cannot tile).
"""

import functools
import typing
import warnings

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu_triton

INTERPRET_BODY = "tpu"
BODIES = {"tpu": "tpu", "gpu": "gpu"}   # jax.default_backend() -> kernel body


class Route(typing.NamedTuple):
  body: str | None
  interpret: bool = False


def route(interpret: bool | None) -> Route:
  """``interpret=True`` forces the interpreter; otherwise compile where a body exists."""
  platform = jax.default_backend()
  if interpret:
    return Route(BODIES.get(platform, INTERPRET_BODY), True)
  return Route(BODIES.get(platform))


@functools.cache
def warn_fallback(op: str, why: str) -> None:
  warnings.warn(f"pallas_kernels.{op}: {why}, using the pure-jnp reference "
                "(interpret=True runs the kernel in the Pallas interpreter)", stacklevel=4)


def pallas_call(kernel, *, route: Route, semantics: tuple[str, ...], **kwargs):
  """``pl.pallas_call`` with the route's interpret flag or backend compiler params; ``semantics``
  are the Mosaic TPU grid dimension semantics ("parallel" / "arbitrary")."""
  if route.interpret:
    return pl.pallas_call(kernel, interpret=True, **kwargs)
  if route.body == "gpu":
    return pl.pallas_call(kernel, compiler_params=plgpu_triton.CompilerParams(num_warps=4,
                                                                             num_stages=3),
                          **kwargs)
  return pl.pallas_call(kernel, compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
                        **kwargs)


def dot(a: jax.Array, b: jax.Array, contract: tuple[tuple[int], tuple[int]]) -> jax.Array:
  """A 2-D ``dot_general`` contracting dims ``contract`` with float32 accumulation: the matmul
  form that Mosaic TPU, Triton and the interpreter all lower (transposed operands included)."""
  return lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32)


def scratch(shape: tuple[int, ...], dtype):
  """An on-chip (VMEM) scratch buffer; the interpreter allocates it as a plain array."""
  return pltpu.VMEM(shape, dtype)


def token_rows(x: jax.Array, block_tokens: int | None, default: int) -> tuple[jax.Array, int]:
  """x flattened to [N, d] and zero-padded to whole token tiles, and the tile (``block_tokens``,
  else ``default`` or N rounded up to 8 when smaller). Padded rows add nothing to weight
  gradients; callers slice them off y."""
  x_NxD = x.reshape(-1, x.shape[-1])
  n = x_NxD.shape[0]
  tile = block_tokens or min(default, -(-n // 8) * 8)
  return jnp.pad(x_NxD, ((0, -n % tile), (0, 0))), tile


def split_tiles(tiles: int, partials: int) -> tuple[int, int]:
  """(partials, steps) for a weight-gradient grid: up to ``partials`` parallel programs, each
  accumulating ``steps`` token tiles into its own partial sum (summed afterwards)."""
  partials = max(p for p in range(1, min(partials, tiles) + 1) if tiles % p == 0)
  return partials, tiles // partials
