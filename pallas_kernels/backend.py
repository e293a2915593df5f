"""Which route a Pallas op takes on this backend, and how its pallas_calls are parameterised.

Routes:
- ``interpret``: the Pallas interpreter, on any backend (``interpret=True``; what the CPU tests use).
- ``compiled``: the kernel compiled by Mosaic TPU. Only TPU is listed in ``COMPILED``: the kernels
  permute their intermediate through a VMEM scratch buffer, which the Triton backend does not have
  ("scratch memory not implemented"), and Mosaic GPU (the default Pallas GPU backend since jax 0.9)
  has no ``dot_general`` lowering. A GPU port adds ``"gpu"`` here with its own kernel body.
- ``reference``: the op's pure-jnp ``reference.py``, with a one-line warning issued once per op
  and backend.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

COMPILED = ("tpu",)


def route(interpret: bool | None, op: str) -> str:
  """``interpret=True`` forces the interpreter; otherwise compile where supported, else fall back."""
  if interpret:
    return "interpret"
  if jax.default_backend() in COMPILED:
    return "compiled"
  _warn_fallback(op, jax.default_backend())
  return "reference"


@functools.cache
def _warn_fallback(op: str, platform: str) -> None:
  warnings.warn(f"pallas_kernels.{op}: no compiled kernel for backend '{platform}', using the "
                "pure-jnp reference (pass interpret=True to run the kernel in the interpreter)",
                stacklevel=4)


def pallas_call(kernel, *, route: str, semantics: tuple[str, ...], **kwargs):
  """``pl.pallas_call`` with the route's interpret flag and Mosaic TPU grid semantics."""
  if route == "interpret":
    return pl.pallas_call(kernel, interpret=True, **kwargs)
  return pl.pallas_call(kernel, compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
                        **kwargs)


def scratch(shape: tuple[int, ...], dtype):
  """An on-chip (VMEM) scratch buffer; the interpreter allocates it as a plain array."""
  return pltpu.VMEM(shape, dtype)


def token_rows(x: jax.Array, block_tokens: int | None) -> tuple[jax.Array, int]:
  """x flattened to [N, d] and zero-padded to whole token tiles, and the tile (default: up to 256,
  a multiple of 8). Padded rows add nothing to weight gradients; callers slice them off y."""
  x_NxD = x.reshape(-1, x.shape[-1])
  n = x_NxD.shape[0]
  tile = block_tokens or min(256, -(-n // 8) * 8)
  return jnp.pad(x_NxD, ((0, -n % tile), (0, 0))), tile


def split_tiles(tiles: int) -> tuple[int, int]:
  """(partials, steps) for a weight-gradient grid: ``partials`` parallel programs each accumulate
  ``steps`` token tiles into their own partial sum (two when even, e.g. for 2-core TPU chips)."""
  partials = 2 if tiles % 2 == 0 else 1
  return partials, tiles // partials
