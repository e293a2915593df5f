"""The contract every structured linear layer implements.

A family is an ``nnx.Module`` mapping ``x[..., d_in] -> y[..., d_out]`` that can say which
dense matrix it represents (``to_dense``), how many parameters it has, how many forward
FLOPs a token costs (1 multiply-add = 2 FLOPs, counted from the contraction that runs),
and what its learnable cores are (each with its own fan-in / fan-out, the unit the
structure-aware muP works on). Models, muP, FLOP accounting and tests rely on nothing else.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import numbers

import jax
import jax.numpy as jnp
from flax import nnx

from structured.backend import cast_for_dot, transpose_tokens_first


class StructureError(ValueError):
  """A structure spec or width the family cannot honour; the message names valid choices."""


@dataclasses.dataclass(frozen=True)
class Core:
  """A learnable tensor of a layer: ``name`` is its attribute on the layer."""

  name: str
  fan_in: int
  fan_out: int


def mup_init_std(fan_in: int, fan_out: int) -> float:
  """Spectral / structure-aware muP init scale of one core (Compute Better Spent, eq. 3)."""
  return fan_in**-0.5 * min(1.0, math.sqrt(fan_out / fan_in))


_CORE_STD = contextvars.ContextVar("core_std", default=mup_init_std)


@contextlib.contextmanager
def core_std_rule(std):
  """Layers built inside draw their cores at ``std(fan_in, fan_out)`` (``structured.make``
  passes the run's ``MuP.core_std``; without it, the muP rule)."""
  token = _CORE_STD.set(std)
  try:
    yield
  finally:
    _CORE_STD.reset(token)


def init_core(rngs: nnx.Rngs, shape: tuple[int, ...], fan_in: int, fan_out: int) -> nnx.Param:
  """A float32 core drawn from N(0, std(fan_in, fan_out)^2) under the rule in force
  (``core_std_rule``; muP's ``mup_init_std`` by default)."""
  std = _CORE_STD.get()(fan_in, fan_out)
  size = math.prod(shape)
  draw = _normal(rngs.params(), 1 << max(0, (size - 1).bit_length()))
  return nnx.Param(std * draw[:size].reshape(shape))


@functools.partial(jax.jit, static_argnums=1)
def _normal(key: jax.Array, n: int) -> jax.Array:
  """n standard normals; callers round n up to a power of two, so a process compiles the
  random-number program once per size octave instead of once per core shape."""
  return jax.random.normal(key, (n,), jnp.float32)


def check_int(kind: str, name: str, value, low: int, high: int | None = None,
              high_name: str = "", why: str = "") -> int:
  """``value`` as an int in [low, high] (no upper bound when ``high`` is None).

  Anything else, floats such as 2.0 and bools included (no silent rounding), is one
  StructureError naming the family, the hyperparameter, its value and the allowed range;
  ``high_name`` spells out where the bound comes from (``min(d_in, d_out)``), ``why`` is
  appended to the message.
  """
  is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if is_int and low <= value and (high is None or value <= high):
    return int(value)
  allowed = (f"an integer >= {low}" if high is None
             else f"an integer in [{low}, {high_name + '=' if high_name else ''}{high}]")
  raise StructureError(f"{kind} {name}={value!r} must be {allowed}{why}")


def check_fraction(kind: str, name: str, value, why: str = "") -> float:
  """``value`` as a float in (0, 1]; anything else (NaN, bools, strings) is one StructureError."""
  is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if is_real and 0 < value <= 1:
    return float(value)
  raise StructureError(f"{kind} {name}={value!r} must be in (0, 1]{why}")


def factorize(d: int, n: int, spec: str = "") -> tuple[int, ...]:
  """Split ``d`` into ``n`` ascending integer factors whose product is ``d``, as balanced as possible.

  Balanced means the largest factor is as small as it can be. Raises StructureError when
  ``d`` has too few factors (a prime ``d`` with ``n > 1``), naming ``spec`` (the hyperparameter
  that asked for ``n``, e.g. "btt cores=3") and the nearest widths that work.
  """
  best = _balanced_factors(d, n)
  if best is None or (n > 1 and min(best) == 1):
    raise StructureError(
        f"{spec + ': ' if spec else ''}width {d} cannot be split into {n} factors > 1; "
        "nearest valid widths: "
        f"{nearest_valid(d, lambda w: (f := _balanced_factors(w, n)) is not None and min(f) > 1)}")
  return best


def _balanced_factors(d: int, n: int) -> tuple[int, ...] | None:
  if n == 1:
    return (d,)
  best = None
  for f in range(2, int(round(d ** (1 / n))) + 2):
    if d % f:
      continue
    rest = _balanced_factors(d // f, n - 1)
    if rest is None:
      continue
    cand = tuple(sorted((f, *rest)))
    if best is None or (max(cand), cand) < (max(best), best):
      best = cand
  return best


def nearest_valid(d: int, ok, count: int = 2) -> list[int]:
  """The ``count`` widths below and above ``d`` (exclusive) that satisfy ``ok``."""
  below = [w for w in range(d - 1, 0, -1) if ok(w)][:count]
  above = [w for w in range(d + 1, 4 * d + 8) if ok(w)][:count]
  return sorted(below + above)


class StructuredLinear(nnx.Module):
  """Base class: bias, dtype policy and parameter counting shared by all families.

  Subclasses set ``d_in``/``d_out`` and implement ``_matmul`` (no bias), ``to_dense``,
  ``flops_per_token`` and ``cores``. Parameters are float32; the contraction runs in the
  input's dtype with float32 accumulation and the output is cast back to the input's dtype.
  ``role`` tells muP where the layer sits ('hidden', 'input', 'readout', 'residual_out').
  """

  kind: str = "base"

  def __init__(self, d_in: int, d_out: int, *, use_bias: bool = False, role: str = "hidden",
               rngs: nnx.Rngs):
    del rngs
    self.d_in, self.d_out, self.role = d_in, d_out, role
    self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32)) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.d_in:
      raise ValueError(f"{type(self).__name__} expects last dim {self.d_in}, got {x.shape}")
    # tokens as one [N, d_in] matrix: a weight gradient over one token axis is a plain matmul;
    # [B, L, d] sums over two (2.5x slower on CPU, GPT-2's head; results/train_step_cpu.md)
    y = self._output(self._matmul(x.reshape(-1, self.d_in)), x)
    if hasattr(self, "__captures__"):   # inside nnx.capture (coordinate checks): record the output
      self.sow(nnx.Intermediate, "output", y)
    return y

  def _output(self, y_NxO: jax.Array, x: jax.Array) -> jax.Array:
    """[N, d_out] result + bias (float32), in ``x``'s dtype and lead axes."""
    if self.bias is not None:
      y_NxO = y_NxO + self.bias[...].astype(jnp.float32)
    return y_NxO.astype(x.dtype).reshape(*x.shape[:-1], self.d_out)

  def then(self, fn, other: "StructuredLinear", x: jax.Array) -> jax.Array:
    """``other(fn(self(x)))``, ``fn`` elementwise; BTT, Kronecker and TT skip transposes between."""
    return other(fn(self(x)))

  def output_blocks(self, x: jax.Array) -> jax.Array:
    """``self(x)`` as y [A, N, d_out / A] in the layout the layer leaves it, y(x)[n, a d_out / A
    + j] = y[a, n, j], for one reducing over all outputs (``step.xent_blocks``); A = 1 here."""
    return self(x).reshape(1, -1, self.d_out)

  def _may_fuse(self, x: jax.Array, *others: "StructuredLinear") -> bool:
    """Whether a family may run this layer (and ``others`` after it) its own way, not ``__call__``:
    x ends in d_in, no layer in ``nnx.capture`` (which records each layer's own output)."""
    return x.shape[-1] == self.d_in and not any(hasattr(l, "__captures__") for l in (self, *others))

  def _matmul(self, x_NxI: jax.Array) -> jax.Array:
    """``x @ W`` for a [N, d_in] batch of tokens, accumulated in float32 (returned in x's dtype or
    float32; the caller casts to x's dtype)."""
    raise NotImplementedError

  def to_dense(self) -> jax.Array:
    """The [d_in, d_out] matrix the layer applies (bias excluded)."""
    raise NotImplementedError

  def flops_per_token(self) -> int:
    """Forward FLOPs of one token's contraction, 1 multiply-add = 2 FLOPs (bias excluded)."""
    raise NotImplementedError

  def cores(self) -> tuple[Core, ...]:
    """The learnable matrices, in contraction order (input side first)."""
    raise NotImplementedError

  def zero_init_cores(self) -> tuple[str, ...]:
    """The cores muP zeroes so that the layer's output starts at zero (residual-branch outputs,
    readout): the last core of a product; families that sum terms zero one core per term."""
    return (self.cores()[-1].name,)

  def num_params(self) -> int:
    """Learnable entries, bias included."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(self, nnx.Param)))

  @classmethod
  def project(cls, w_IxO: jax.Array, *, rngs: nnx.Rngs | None = None, **hparams) -> "StructuredLinear":
    """The family member closest to a dense [d_in, d_out] matrix."""
    raise StructureError(f"family '{cls.kind}' has no known projection from a dense matrix")


def einsum(expr: str, *operands: jax.Array) -> jax.Array:
  """einsum in the first operand's dtype (params cast to it), float32 accumulation, the result in
  the dtype it ran in (see ``cast_for_dot``)."""
  dtype = operands[0].dtype
  operands = tuple(cast_for_dot(o, dtype) for o in operands)
  return jnp.einsum(expr, *operands, preferred_element_type=operands[0].dtype)


def bmm(t: jax.Array, w_BxKxM: jax.Array, tokens_last: bool = False) -> jax.Array:
  """Batched matmul with the batch axis leading: ``t[B, N, K] x w[B, K, M] -> [B, N, M]``, or with
  ``tokens_last`` ``t[B, K, N] -> [B, M, N]`` (without B: one matrix product); in ``t``'s dtype
  (``w`` cast to it), float32 accumulation, the result in the dtype it ran in (see
  ``cast_for_dot``).

  Every backend runs this as one batched GEMM with no relayout of its own. Structured families
  move their activations into it explicitly, once per stage; an einsum with the batch axis between
  the token and feature axes lets XLA:CPU transpose the activations before and after every stage,
  forward and backward (benchmarks/results/train_step_cpu.md). Its weight gradient is formed in
  the faster orientation (``_weight_grad``).
  """
  dtype = t.dtype
  return _bmm(cast_for_dot(t, dtype), cast_for_dot(w_BxKxM, dtype), tokens_last)


def matmul(x_NxK: jax.Array, w_KxM: jax.Array) -> jax.Array:
  """``x @ w`` for tokens x [N, K] and a weight [K, M]: ``bmm`` without the batch axis."""
  return bmm(x_NxK, w_KxM)


def _dims(t: jax.Array, contract: tuple[int, int]):
  """dot_general dimension numbers contracting axes ``contract`` (counted after the batch axis,
  which [B, ., .] operands lead with and [., .] ones lack)."""
  b = t.ndim - 2
  return ((contract[0] + b,), (contract[1] + b,)), ((0,), (0,)) if b else ((), ())


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _bmm(t, w_KxM, tokens_last: bool):
  operands = (w_KxM, t) if tokens_last else (t, w_KxM)
  return jax.lax.dot_general(*operands, _dims(t, (0, 0) if tokens_last else (1, 0)),
                             preferred_element_type=t.dtype)


def _bmm_fwd(t, w_KxM, tokens_last):
  return _bmm(t, w_KxM, tokens_last), (t, w_KxM)


def _bmm_bwd(tokens_last, res, dy):
  t, w_KxM = res
  dy = dy.astype(t.dtype)
  if tokens_last:   # t [K, N], dy [M, N]: the tokens are both operands' minor axis
    dt = jax.lax.dot_general(w_KxM, dy, _dims(t, (1, 0)))
    dw = jax.lax.dot_general(t, dy, _dims(t, (1, 1)))
  else:             # t [N, K], dy [N, M]
    dt = jax.lax.dot_general(dy, w_KxM, _dims(t, (1, 1)))
    dw = _weight_grad(t, dy)
  return dt.astype(t.dtype), dw.astype(w_KxM.dtype)


_MIN_TOKENS = 128


def _weight_grad(t_NxK: jax.Array, dy_NxM: jax.Array) -> jax.Array:
  """t^T dy [K, M] (each with a leading batch axis or none), contracting the tokens, their major
  axis. Where the weight has fewer outputs than inputs (M < K) it is formed as (dy^T t)^T:
  XLA:CPU runs t^T dy 3-25x slower there (operands [2, 1024, 1024] x [2, 1024, 4]: 15 vs
  0.6 ms; [4096, 1024] x [4096, 256]: 72 vs 52 ms), and the optimization barrier keeps XLA from
  folding the small transpose back into the dot. Where it has many more (the backend's rule,
  ``backend.transpose_tokens_first``), t is transposed first and the dot is a plain product.
  Only from ``_MIN_TOKENS`` tokens: with 2-3 tokens XLA:CPU aborts compiling the first form
  inside BLAST's backward (a dot operand left in a non-default layout), and so few tokens gain
  nothing."""
  (n, k), m = t_NxK.shape[-2:], dy_NxM.shape[-1]
  if m < k and n >= _MIN_TOKENS:
    dw_MxK = jax.lax.optimization_barrier(jax.lax.dot_general(dy_NxM, t_NxK, _dims(t_NxK, (0, 0))))
    return jnp.swapaxes(dw_MxK, -1, -2)
  if n >= _MIN_TOKENS and transpose_tokens_first(k, m, t_NxK.ndim > 2):
    t_KxN = jax.lax.optimization_barrier(jnp.swapaxes(t_NxK, -1, -2))
    return jax.lax.dot_general(t_KxN, dy_NxM, _dims(t_NxK, (1, 0)))
  return jax.lax.dot_general(t_NxK, dy_NxM, _dims(t_NxK, (0, 0)))


_bmm.defvjp(_bmm_fwd, _bmm_bwd)
