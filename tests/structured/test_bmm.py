"""base.bmm / base.matmul: a dot with a hand-written backward (the weight gradient formed in the
faster orientation), equal to autodiff of the plain dot in values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from structured import backend, base


def _reference(t, w, tokens_last):
  if t.ndim == 2:
    return t @ w
  return jnp.einsum("bkn,bkm->bmn" if tokens_last else "bnk,bkm->bnm", t, w)


BATCHED = [(3, 256, 48, 16), (3, 256, 16, 48), (3, 256, 32, 32),
           (3, 2, 48, 16)]   # M < K with few tokens: the plain form


@pytest.mark.parametrize("batch,n,k,m,tokens_last", [
    (None, 256, 64, 8, False),   # matmul, M < K with many tokens: the transposed weight gradient
    (None, 256, 8, 64, False),   # matmul, M >= 4 K: tokens transposed first (on CPU)
    (None, 256, 16, 48, False),  # matmul, K < M < 4 K: the plain form
    *[(*case, False) for case in BATCHED], *[(*case, True) for case in BATCHED]])
def test_values_and_gradients_match_autodiff_of_the_plain_dot(batch, n, k, m, tokens_last):
  lead = () if batch is None else (batch,)
  keys = jax.random.split(jax.random.key(n + k + m), 3)
  t = jax.random.normal(keys[0], (*lead, k, n) if tokens_last else (*lead, n, k))
  w = jax.random.normal(keys[1], (*lead, k, m))
  out = _reference(t, w, tokens_last)
  r = jax.random.normal(keys[2], out.shape)
  apply = ((lambda t, w: base.matmul(t, w)) if batch is None
           else (lambda t, w: base.bmm(t, w, tokens_last)))

  def loss(f):
    return jax.jit(jax.value_and_grad(lambda t, w: jnp.sum(f(t, w) * r), (0, 1)))

  (got, grads), (want, wants) = loss(apply)(t, w), loss(lambda t, w: _reference(t, w, tokens_last))(t, w)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, ref in zip(grads, wants, strict=True):
    assert g.shape == ref.shape
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize("k,m,rule,transposed", [
    (8, 64, {"cpu": 4}, True), (16, 48, {"cpu": 4}, False), (8, 64, {}, False)])
def test_tokens_are_transposed_first_where_the_backend_rule_says(monkeypatch, k, m, rule,
                                                                  transposed):
  """The weight gradient's form is the backend's choice (``TRANSPOSE_TOKENS_FROM_RATIO``): with
  the rule, an [N, K] input with M >= 4 K outputs goes through a barrier-held transpose; without
  it (other backends), the plain dot."""
  monkeypatch.setattr(backend, "TRANSPOSE_TOKENS_FROM_RATIO", rule)
  t, w = jnp.ones((256, k)), jnp.ones((k, m))
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda w: jnp.sum(base.matmul(t, w))))(w))
  assert ("optimization_barrier" in jaxpr) == transposed


def test_bfloat16_gradients_keep_the_operand_dtype():
  t = jax.random.normal(jax.random.key(0), (256, 64), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(1), (64, 8), jnp.float32)
  g_t, g_w = jax.grad(lambda t, w: jnp.sum(base.matmul(t, w).astype(jnp.float32)), (0, 1))(t, w)
  assert g_t.dtype == jnp.bfloat16 and g_w.dtype == jnp.float32
  want = jax.grad(lambda w: jnp.sum(t.astype(jnp.float32) @ w))(w)
  np.testing.assert_allclose(g_w, want, rtol=2e-2)
