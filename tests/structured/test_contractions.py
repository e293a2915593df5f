"""The batched-matmul contractions (base.bmm; BTT/Monarch in both token layouts, Kronecker's
leading-mode steps): values and gradients equal those of the dense matrix the layer represents.

BTT picks tokens-middle or tokens-last by a byte count (``BTT._tokens_last``); both layouts are
forced here at every shape, so each is checked whatever the rule picks: square and rectangular,
ranks 1-3, 2-4 cores, float32 at rel. 1e-5. bfloat16 is checked against float32 at bf16's
resolution (rel. 2e-2 on values, 3e-2 on gradients; bf16 keeps 8 mantissa bits).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from structured import base
from structured.btt import BTT

BTT_CASES = [(64, 64, 1, 2), (64, 144, 3, 2), (64, 64, 1, 3), (64, 216, 2, 3), (81, 16, 2, 4)]


def _grads(layer, apply, x, r):
  """d/d(params, x) of sum(apply(layer, x) * r)."""
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  loss = lambda p, x: jnp.sum(apply(nnx.merge(graphdef, p, rest), x) * r)
  return jax.value_and_grad(loss, (0, 1))(params, x)


def _assert_close(got, want, rtol):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.abs(w).max()) + 1e-7)


def _layer_and_data(kind, d_in, d_out, dtype=jnp.float32, **hparams):
  layer = structured.make(kind, d_in, d_out, rngs=nnx.Rngs(0), **hparams)
  x = jax.random.normal(jax.random.key(1), (5, d_in), dtype)
  r = jax.random.normal(jax.random.key(2), (5, d_out), jnp.float32)
  return layer, x, r


def _dense(layer, x):
  return x.astype(jnp.float32) @ layer.to_dense()


@pytest.mark.parametrize("tokens_last", [False, True], ids=["tokens_middle", "tokens_last"])
@pytest.mark.parametrize("d_in,d_out,rank,cores", BTT_CASES)
def test_btt_layouts_match_the_dense_matrix(monkeypatch, tokens_last, d_in, d_out, rank, cores):
  monkeypatch.setattr(BTT, "_tokens_last", lambda self: tokens_last)
  layer, x, r = _layer_and_data("btt", d_in, d_out, rank=rank, cores=cores)
  _assert_close(_grads(layer, lambda m, x: m(x), x, r), _grads(layer, _dense, x, r), 1e-5)


@pytest.mark.parametrize("tokens_last", [False, True], ids=["tokens_middle", "tokens_last"])
def test_btt_layouts_in_bfloat16_match_float32(monkeypatch, tokens_last):
  monkeypatch.setattr(BTT, "_tokens_last", lambda self: tokens_last)
  layer, x, r = _layer_and_data("btt", 64, 216, rank=2, cores=3)
  (v16, g16), (v32, g32) = (_grads(layer, lambda m, x: m(x).astype(jnp.float32), x.astype(dt), r)
                            for dt in (jnp.bfloat16, jnp.float32))
  _assert_close(v16, v32, 2e-2)
  _assert_close(g16, g32, 3e-2)


def test_btt_layout_rule_moves_fewer_bytes_through_full_transposes():
  """Tokens go last when the intermediates between cores hold at least d_in + d_out values per
  token: rank 1 with two cores has one d-sized intermediate (middle); rank 2, or three cores at
  rank 1, have 2d (last); monarch b=4 at d=1024 is rank 64 on 4 x 4 modes, d-sized (middle)."""
  make = lambda kind, **h: structured.make(kind, 1024, 1024, rngs=nnx.Rngs(0), **h)
  assert not make("btt", rank=1)._tokens_last()
  assert make("btt", rank=2)._tokens_last()
  assert make("btt", rank=1, cores=3)._tokens_last()
  assert not make("monarch", blocks=4)._tokens_last()


@pytest.mark.parametrize("d_in,d_out,blocks", [(64, 64, 4), (64, 128, 2)])
def test_monarch_matches_the_dense_matrix(d_in, d_out, blocks):
  layer, x, r = _layer_and_data("monarch", d_in, d_out, blocks=blocks)
  _assert_close(_grads(layer, lambda m, x: m(x), x, r), _grads(layer, _dense, x, r), 1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("tokens_last", [False, True])
def test_bmm_is_the_batched_einsum_with_float32_accumulation(tokens_last, dtype):
  """On CPU bf16 operands are widened (a float32 result); elsewhere the result keeps the dtype."""
  t = jax.random.normal(jax.random.key(0), (3, 7, 5) if tokens_last else (3, 5, 7), dtype)
  w = jax.random.normal(jax.random.key(1), (3, 7, 4))
  got = base.bmm(t, w, tokens_last)
  expr = "bkn,bkm->bmn" if tokens_last else "bnk,bkm->bnm"
  want = jnp.einsum(expr, t.astype(jnp.float32), w.astype(dtype).astype(jnp.float32))
  assert got.dtype == (jnp.float32 if jax.default_backend() == "cpu" else dtype)
  np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=1e-5 if got.dtype == jnp.float32
                             else 1e-2, atol=1e-5 if got.dtype == jnp.float32 else 1e-2)
