"""The structured-layer call path: tokens as one [N, d_in] matrix, and bfloat16 on every backend.

StructuredLinear flattens [..., d_in] to [N, d_in] before a family's contraction and restores the
lead axes after; values and gradients (params and input) must equal those of the dense matrix the
layer represents, at 3-D inputs, square and rectangular shapes, ranks > 1 and c > 2 cores. bf16:
XLA:CPU lacks some bf16 x bf16 -> f32 dots (e.g. the transposed-lhs matvec a one-token kronecker
call lowers to), so base.einsum widens bf16 operands on CPU; bf16 results are checked against
float32 at bf16's resolution (rel. 2e-2; bf16 keeps 8 mantissa bits).
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured

CASES = [(kind, {}) for kind in sorted(structured.FAMILIES)] + [
    ("btt", {"rank": 2, "cores": 3}), ("btt", {"rank": 3}), ("tt", {"cores": 4, "rank": 3}),
    ("kronecker", {"factors": 3}), ("low_rank", {"rank": 5})]
SHAPES = [(64, 64), (64, 144), (144, 64)]   # (144, 64): TT and 3-factor Kronecker run G_c first


def _loss_via(layer, apply):
  """sum(apply(layer params, x) * r) as a function of (params, x), for a fixed random r."""
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def loss(params, x, r):
    return jnp.sum(apply(nnx.merge(graphdef, params, rest), x) * r)

  return loss, params


@pytest.mark.parametrize("d_in,d_out", SHAPES)
@pytest.mark.parametrize("kind,hparams", CASES, ids=[f"{k}{h or ''}" for k, h in CASES])
def test_3d_input_values_and_grads_match_the_dense_matrix(kind, hparams, d_in, d_out):
  layer = structured.make(kind, d_in, d_out, rngs=nnx.Rngs(0), use_bias=True, **hparams)
  x = jax.random.normal(jax.random.key(1), (2, 3, d_in))
  r = jax.random.normal(jax.random.key(2), (2, 3, d_out))
  loss, params = _loss_via(layer, lambda m, x: m(x))
  ref, _ = _loss_via(layer, lambda m, x: x @ m.to_dense() + (m.bias[...] if m.bias is not None
                                                               else 0.0))
  got, want = jax.grad(loss, (0, 1))(params, x, r), jax.grad(ref, (0, 1))(params, x, r)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()) + 1e-7)
  assert layer(x).shape == (2, 3, d_out)


@pytest.mark.parametrize("kind,hparams", CASES, ids=[f"{k}{h or ''}" for k, h in CASES])
def test_bfloat16_one_token_eager_and_grad(kind, hparams):
  layer = structured.make(kind, 64, 144, rngs=nnx.Rngs(0), **hparams)
  x = jax.random.normal(jax.random.key(1), (1, 64))
  y16 = layer(x.astype(jnp.bfloat16))   # eager: one dot per op, no fusion to hide a bad layout
  want = layer(x)
  assert y16.dtype == jnp.bfloat16
  assert float(jnp.abs(y16.astype(jnp.float32) - want).max()) < 2e-2 * float(jnp.abs(want).max())
  grad = jax.grad(lambda v: jnp.sum(layer(v).astype(jnp.float32) ** 2))
  g16, g32 = grad(x.astype(jnp.bfloat16)), grad(x)
  assert float(jnp.abs(g16.astype(jnp.float32) - g32).max()) < 3e-2 * float(jnp.abs(g32).max())


@pytest.mark.parametrize("d_in,d_out,n", [(32, 128, 1), (128, 16, 1), (32, 128, 7)])
def test_kronecker_bfloat16_shapes_that_failed_on_cpu(d_in, d_out, n):
  # was: UNIMPLEMENTED: Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32
  layer = structured.make("kronecker", d_in, d_out, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (n, d_in))
  grad = nnx.grad(lambda m, v: jnp.sum(m(v).astype(jnp.float32) ** 2))
  y16 = layer(x.astype(jnp.bfloat16))
  assert float(jnp.abs(y16 - layer(x)).max()) < 2e-2 * float(jnp.abs(layer(x)).max())
  for g16, g32 in zip(jax.tree.leaves(grad(layer, x.astype(jnp.bfloat16))),
                      jax.tree.leaves(grad(layer, x))):
    assert float(jnp.abs(g16 - g32).max()) < 3e-2 * float(jnp.abs(g32).max())


@pytest.mark.parametrize("n", [1, 5])
def test_block_sparse_pallas_fallback_runs_in_bfloat16(n):
  layer = structured.make("block_sparse", 64, 128, rngs=nnx.Rngs(0), impl="pallas")
  x = jax.random.normal(jax.random.key(1), (n, 64))
  y16 = layer(x.astype(jnp.bfloat16))   # off TPU: the eager pure-jnp fallback
  want = x @ layer.to_dense()
  assert float(jnp.abs(y16.astype(jnp.float32) - want).max()) < 2e-2 * float(jnp.abs(want).max())
  g16 = jax.grad(lambda v: jnp.sum(layer(v).astype(jnp.float32)))(x.astype(jnp.bfloat16))
  np.testing.assert_allclose(g16.astype(jnp.float32), layer.to_dense().sum(1)[None].repeat(n, 0),
                             rtol=2e-2, atol=2e-2 * float(jnp.abs(layer.to_dense().sum(1)).max()))


def _token_dot_signatures(lowered_text: str, tokens: int) -> list[str]:
  """The ``(operand types) -> result type`` of every dot_general over the token axis in a lowered
  StableHLO module: a dim that is a multiple of ``tokens`` (Kronecker flattens the tokens with the
  other modes); dots that build a weight from its factors are not activations' dots."""
  sigs = [line.rsplit(" : ", 1)[-1] for line in lowered_text.splitlines() if "dot_general" in line]
  return [sig for sig in sigs if any(int(n) % tokens == 0 for n in re.findall(r"(\d+)x", sig))]


LOWERED = CASES + [("sparse_lowrank", {"impl": "gather"})]


@pytest.mark.parametrize("kind,hparams", LOWERED, ids=[f"{k}{h or ''}" for k, h in LOWERED])
def test_bfloat16_forward_and_backward_dots_stay_bfloat16_off_cpu(kind, hparams, monkeypatch):
  """On GPU/TPU every activation dot of a bf16 layer's forward and backward has bf16 operands and
  result: a float32 result makes the backward's dots mixed (a float32 cotangent), which XLA:GPU
  ran as float32/tf32 GEMMs (benchmarks/results/gpu_h200.md). Lowered, not compiled, as for a GPU."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")   # what backend.cast_for_dot asks
  layer = structured.make(kind, 64, 144, rngs=nnx.Rngs(0), use_bias=True, **hparams)
  loss, params = _loss_via(layer, lambda m, x: m(x).astype(jnp.float32))
  x = jnp.ones((5, 7, 64), jnp.bfloat16)   # 35 tokens: a dim no weight has
  r = jnp.ones((5, 7, 144), jnp.float32)
  with warnings.catch_warnings():   # e.g. a float32 scatter into a bf16 buffer (an error to come)
    warnings.simplefilter("error", FutureWarning)
    warnings.simplefilter("error", DeprecationWarning)
    text = jax.jit(jax.grad(loss, (0, 1))).lower(params, x, r).as_text()
  dots = _token_dot_signatures(text, 35)
  assert dots, "no dot over the tokens in the lowered step"
  assert all("f32" not in sig for sig in dots), "\n".join(s for s in dots if "f32" in s)


# (up, down) pairs: BTT, Monarch, Kronecker and TT feed-forwards whose layouts meet (the
# transposes between them skipped), and pairs that fall back to down(fn(up(x))): BTT 128 = 8 x 16
# leaves up's output as [8, N, 16] where down reads [16, N, 8], rank 4 puts tokens last; a chain
# whose mirrored contraction costs more than its own order (64 = 8 x 8 -> 128 = 8 x 16: 3072 ->
# 4096 per token; TT 4 x 4 x 4 -> 4 x 8 x 8), or whose down projection runs mirrored itself
PAIRS = [("btt", {"rank": 1}, 64, 256, True), ("btt", {"rank": 2}, 64, 256, True),
         ("btt", {"cores": 3}, 64, 512, True), ("monarch", {"blocks": 4}, 64, 256, True),
         ("kronecker", {}, 64, 256, True), ("kronecker", {"factors": 3}, 64, 512, True),
         ("tt", {"cores": 2, "rank": 2}, 64, 256, True), ("tt", {"cores": 3, "rank": 2}, 64, 512, True),
         ("tt", {"cores": 3, "rank": 2}, 32, 64, True),   # up's G_c first strictly cheaper
         ("btt", {"rank": 1}, 64, 128, False), ("btt", {"rank": 4}, 64, 256, False),
         ("kronecker", {}, 64, 128, False), ("tt", {"cores": 3, "rank": 2}, 64, 256, False)]


def _activation_transposes(fn, x) -> int:
  """Transposes of arrays that hold the tokens (10 of them: no weight's size is a multiple of 5)."""
  return sum(e.primitive.name == "transpose" and e.invars[0].aval.size % 5 == 0
             for e in jax.make_jaxpr(fn)(x).eqns)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kind,hparams,width,hidden,meets", PAIRS)
def test_then_equals_down_of_fn_of_up(kind, hparams, width, hidden, meets, dtype):
  rngs = nnx.Rngs(0)
  up = structured.make(kind, width, hidden, rngs=rngs, use_bias=True, **hparams)
  down = structured.make(kind, hidden, width, rngs=rngs, use_bias=True, **hparams)
  for layer in (up, down):   # non-zero biases
    layer.bias[...] = jax.random.normal(jax.random.key(7), layer.bias.shape)
  x = jax.random.normal(jax.random.key(1), (2, 5, width), dtype)
  r = jax.random.normal(jax.random.key(2), (2, 5, width), dtype)

  def loss(layers, x, fused):
    up, down = layers
    y = up.then(jax.nn.gelu, down, x) if fused else down(jax.nn.gelu(up(x)))
    return jnp.sum(y.astype(jnp.float32) * r), y

  grad = nnx.grad(loss, argnums=(0, 1), has_aux=True)
  (g_fused, gx_fused), y_fused = grad((up, down), x, True)
  (g_plain, gx_plain), y_plain = grad((up, down), x, False)
  assert y_fused.dtype == y_plain.dtype == dtype
  # float32 1e-5 relative (bf16 2e-2), the absolute part scaled to the tensor's largest entry: a
  # chain's mirrored contraction sums its weight gradients in another order
  rel = 1e-5 if dtype == jnp.float32 else 2e-2

  def close(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    np.testing.assert_allclose(a, b, rtol=rel, atol=rel * np.abs(b).max())

  close(y_fused, y_plain)
  close(gx_fused, gx_plain)
  jax.tree.map(close, nnx.state(g_fused), nnx.state(g_plain))
  transposes = [_activation_transposes(lambda x: loss((up, down), x, fused)[0], x)
                for fused in (True, False)]
  assert (transposes[0] < transposes[1]) == meets   # the layouts met: two transposes fewer


@pytest.mark.parametrize("d_in,d_out,hparams,middle", [
    (64, 16, {"rank": 1}, True), (256, 144, {"rank": 1}, True), (512, 64, {"cores": 3}, True),
    (64, 256, {"rank": 1}, False), (64, 144, {"rank": 2}, False), (64, 64, {"rank": 4}, False),
    (64, 512, {"cores": 3}, False)])
def test_btt_output_blocks_is_its_output_reordered(d_in, d_out, hparams, middle):
  """BTT's ``output_blocks`` [A, N, B] (its last core's [n_<c-1, N, n_c-1] with tokens in the
  middle; [d_out, N, 1] with tokens last, where the intermediates hold at least d_in values a
  token) is its call's y [N, d_out] with y[n, a B + b] = blocks[a, n, b], bias included; so are
  the gradients, float32 1e-5 (relative to each tensor's largest entry)."""
  layer = structured.make("btt", d_in, d_out, use_bias=True, rngs=nnx.Rngs(0), **hparams)
  layer.bias[...] = jax.random.normal(jax.random.key(1), (d_out,))
  x = jax.random.normal(jax.random.key(2), (3, 5, d_in))
  r = jax.random.normal(jax.random.key(3), (15, d_out))
  blocks = layer.output_blocks(x)
  want = (d_out // layer.ns[-1], 15, layer.ns[-1]) if middle else (d_out, 15, 1)
  assert blocks.shape == want
  as_call = lambda blocks: jnp.swapaxes(blocks, 0, 1).reshape(15, d_out)
  losses = (lambda m, x: jnp.sum(m(x).reshape(15, d_out) * r),
            lambda m, x: jnp.sum(as_call(m.output_blocks(x)) * r))
  (value_c, grads_c), (value_b, grads_b) = (
      nnx.value_and_grad(loss, argnums=(0, 1))(layer, x) for loss in losses)
  np.testing.assert_allclose(value_b, value_c, rtol=1e-5)
  # the layouts sum weight gradients in other orders: the absolute part scaled to the tensor
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-5 * float(np.abs(b).max())),
               nnx.state(grads_b), nnx.state(grads_c))
