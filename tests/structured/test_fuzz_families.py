"""Property-based fuzz of every family: any widths and hyperparameters either build a layer that
keeps the contract or raise one StructureError naming a hyperparameter.

Each draw takes widths from a small set (square, rectangular, non-power-of-two, prime) and
replaces some hyperparameters by valid-looking ints or fractions, or by zero, negative, float,
bool, string or far too large values. A layer that builds must apply ``x @ to_dense()``, count
its Param entries (masked zeros left out) in ``num_params`` and its per-token FLOPs, as counted
from the contraction that runs (its jaxpr), in ``flops_per_token``. Anything else than a
StructureError naming ``<hyperparameter>=`` is a failure. Draws are derandomized and bounded so
the file runs in well under a minute.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import structured
from structured import StructureError
from structured.einsum import CORNERS
from structured.masked import Mask

WIDTHS = (7, 8, 12, 16, 24, 32, 36, 48, 64)
INTS = ("blocks", "blocks_out", "block", "butterfly_size", "cores", "factors", "m", "n",
        "n_factors", "rank", "seed")
FRACTIONS = ("density", "rank_frac")
BAD_INTS = (0, -1, -3, 1.5, 2.0, 10**6, True, "2", None)
BAD_FRACTIONS = (0.0, -0.5, 1.5, float("nan"), float("inf"), True, "0.5")
IMPLS = ("xla", "dense", "gather", "cuda", 1)   # pallas: covered by the kernel tests
THETAS = (*CORNERS, "monarch", (0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25),
          (0.5, 0.0, 0.5, 0.0, 0.5, 0.5, 1.0), (0.5,) * 7, (1.0, 0.0), 3)
# Draws per family; masks and supports are built for real (a compile per draw, ~1 s): fewer.
EXAMPLES, EXAMPLES_BUILT_FOR_REAL = 10, 8


def _values(name: str, d_in: int, d_out: int) -> st.SearchStrategy:
  """Values to try for hyperparameter ``name``: mostly plausible, often invalid."""
  if name in INTS:   # small ints and the divisors of both widths (block sizes, block counts)
    g = math.gcd(d_in, d_out)
    divisors = [k for k in range(1, g + 1) if g % k == 0]
    return st.one_of(st.integers(1, 8), st.sampled_from(divisors), st.sampled_from(BAD_INTS))
  if name in FRACTIONS:
    return st.one_of(st.sampled_from((0.05, 0.25, 0.5, 1, 1.0)), st.sampled_from(BAD_FRACTIONS))
  if name == "impl":
    return st.sampled_from(IMPLS)
  if name == "theta":
    return st.sampled_from(THETAS)
  if name == "dims":   # exact factorizations (valid unless the rank is too high) or junk
    def split(d):
      return st.sampled_from([(a, b, d // (a * b)) for a in range(1, d + 1) if d % a == 0
                              for b in range(1, d // a + 1) if (d // a) % b == 0])
    exact = st.tuples(split(d_in), split(d_out), st.integers(1, 4)).map(
        lambda t: (*t[0], *t[1], t[2]))
    return st.one_of(exact, st.sampled_from(((8, 1, 8, 1, 8, 8, 1), (0,) * 7, 5, "btt")))
  raise AssertionError(f"no fuzz values for hyperparameter '{name}': add it to this file")


@st.composite
def layer_specs(draw, kind: str):
  d_in, d_out = draw(st.sampled_from(WIDTHS)), draw(st.sampled_from(WIDTHS))
  names = sorted(structured.hyperparameters(kind))
  chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
  hparams = {n: draw(_values(n, d_in, d_out)) for n in chosen}
  return d_in, d_out, hparams, draw(st.booleans())


def _names_a_hyperparameter(message: str, effective: dict) -> bool:
  """The message shows ``name=value`` for a hyperparameter at the value it had (a default of
  None is resolved by the family, so any ``name=`` counts for it)."""
  for name, value in effective.items():
    shown = "" if value is None else "|".join(re.escape(s) for s in {repr(value), str(value)})
    if re.search(rf"(?<![\w.]){name}=(?:{shown})" if shown else rf"(?<![\w.]){name}=", message):
      return True
  return False


def _flop_count(jaxpr) -> int:
  """FLOPs of a jaxpr: 2 per multiply-add of every dot_general, 1 per element of every
  elementwise add/mul and scatter-add (sub-jaxprs included)."""
  total = 0
  for eqn in jaxpr.eqns:
    out = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * out * math.prod(lhs[i] for i in contract)
    elif eqn.primitive.name in ("add", "mul"):
      total += out
    elif eqn.primitive.name == "scatter-add":
      total += math.prod(eqn.invars[2].aval.shape)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          total += _flop_count(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          total += _flop_count(sub)
  return total


def _build(kind: str, d_in: int, d_out: int, **kwargs):
  """The layer with N(0, 1) numpy cores, built abstractly: no random-init compile per core shape
  (test_contract.py covers the real init). Families with other state (masks, supports) are
  built for real, as that state must be consistent, in one compile rather than one per op."""
  make = lambda: structured.make(kind, d_in, d_out, rngs=nnx.Rngs(0), **kwargs)
  graphdef, params, rest = nnx.split(nnx.eval_shape(make), nnx.Param, ...)
  if jax.tree.leaves(rest):
    return nnx.jit(make)()
  rng = np.random.default_rng(0)
  return nnx.merge(graphdef, jax.tree.map(lambda s: rng.standard_normal(s.shape, s.dtype), params),
                   rest)


def _check_contract(layer, d_in: int, d_out: int, use_bias: bool):
  x = jax.random.normal(jax.random.key(1), (3, d_in))
  y, want = jax.jit(lambda x: (layer(x), x @ layer.to_dense()))(x)   # one compile, not one per op
  assert y.shape == (3, d_out)
  np.testing.assert_allclose(y, want + (layer.bias[...] if use_bias else 0), rtol=1e-5,
                             atol=1e-5 * (1 + float(jnp.abs(want).max())))
  leaves = jax.tree.leaves(nnx.state(layer, nnx.Param))
  masked_zeros = sum(int((~m).sum()) for m in jax.tree.leaves(nnx.state(layer, Mask)))
  assert layer.num_params() == sum(leaf.size for leaf in leaves) - masked_zeros
  # per token: the difference between 2 tokens and 1 cancels what does not scale with tokens
  flops = [_flop_count(jax.make_jaxpr(layer)(jnp.ones((n, d_in))).jaxpr) for n in (1, 2)]
  bias_adds = d_out if use_bias else 0   # flops_per_token leaves the bias out
  assert flops[1] - flops[0] == layer.flops_per_token() + bias_adds


@pytest.mark.parametrize("kind", sorted(structured.FAMILIES))
def test_any_draw_builds_a_faithful_layer_or_names_the_bad_hyperparameter(kind):
  built, refused = [], []
  abstract = nnx.eval_shape(lambda: structured.make(kind, 64, 64, rngs=nnx.Rngs(0)))
  built_for_real = bool(jax.tree.leaves(nnx.state(abstract, nnx.Not(nnx.Param))))

  @settings(max_examples=EXAMPLES_BUILT_FOR_REAL if built_for_real else EXAMPLES,
            deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow])
  @given(spec=layer_specs(kind))
  def check(spec):
    d_in, d_out, hparams, use_bias = spec
    try:
      layer = _build(kind, d_in, d_out, use_bias=use_bias, **hparams)
    except StructureError as error:
      effective = {**structured.hyperparameters(kind), **hparams}
      assert _names_a_hyperparameter(str(error), effective), (hparams, str(error))
      assert "\n" not in str(error)
      refused.append(spec)
      return
    _check_contract(layer, d_in, d_out, use_bias)
    built.append(spec)

  check()
  assert built   # the draws reach the contract checks
  assert refused or not structured.hyperparameters(kind)   # and the errors, where there are any
