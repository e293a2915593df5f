"""The fused BTT kernel, in Pallas interpret mode, against the pure-jnp reference.

Tolerances: max |kernel - exact| / max |exact| <= 1e-5 in float32 and <= 1e-2 in bfloat16, where
"exact" is the reference evaluated in float32 on the (bf16-rounded) inputs; bf16 keeps 8 mantissa
bits and the kernel, like the layer, rounds the intermediate z to bf16 (measured: ~4e-3,
the same as the bf16 reference's own error).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from pallas_kernels import backend
from pallas_kernels.btt import api, kernel_triton, reference
from structured.btt import BTT

TOL = {jnp.float32: 1e-5, jnp.bfloat16: 1e-2}


def _inputs(lead, m2, m1, r, n1, n2, dtype, seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(k[0], (*lead, m1 * m2), jnp.float32).astype(dtype)
  w0 = jax.random.normal(k[1], (m2, m1, r, n1), jnp.float32) / m1**0.5
  w1 = jax.random.normal(k[2], (n1, m2, r, n2), jnp.float32) / (r * m2)**0.5
  ct = jax.random.normal(k[3], (*lead, n1 * n2), jnp.float32).astype(dtype)
  return x, w0, w1, ct


def _value_and_grads(fn, x, w0, w1, ct):
  def loss(x, w0, w1):
    y = fn(x, w0, w1)
    return (y.astype(jnp.float32) * ct).sum(), y

  grads, y = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(x, w0, w1)
  return (y, *grads)


@pytest.fixture(params=["tpu", "gpu"])
def body(request, monkeypatch):
  """Which kernel body interpret mode runs: the fused TPU one or the two-pass Triton one."""
  monkeypatch.setattr(backend, "INTERPRET_BODY", request.param)
  return request.param


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("lead,m2,m1,r,n1,n2,tile", [
    ((32,), 4, 4, 1, 4, 4, 8),        # square Monarch-like, 4 tiles: 2 partial sums of 2 steps
    ((2, 5), 3, 4, 2, 5, 8, 8),       # rectangular 12 -> 40, odd block counts, padded tokens
    ((24,), 2, 6, 3, 3, 4, 16),       # rank 3, 12 -> 12 with non-power-of-two factors
    ((16,), 4, 8, 4, 2, 4, 16),       # rank 4, 32 -> 8 (more blocks in than out)
])
def test_forward_and_grads_match_reference(lead, m2, m1, r, n1, n2, tile, dtype, body,
                                           assert_close):
  x, w0, w1, ct = _inputs(lead, m2, m1, r, n1, n2, dtype)
  got = _value_and_grads(lambda *a: api.btt(*a, interpret=True, block_tokens=tile), x, w0, w1, ct)
  exact = _value_and_grads(reference.btt, x.astype(jnp.float32), w0, w1, ct.astype(jnp.float32))
  assert got[0].shape == (*lead, n1 * n2) and got[0].dtype == dtype
  assert [g.dtype for g in got[1:]] == [dtype, jnp.float32, jnp.float32]
  for g, e in zip(got, exact):
    assert_close(g, e, TOL[dtype])


def test_matches_structured_btt_layer(assert_close):
  layer = BTT(24, 40, rank=2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (3, 24))
  y = api.btt(x, layer.w0[...], layer.w1[...], interpret=True)
  assert_close(y, x @ layer.to_dense(), 1e-5)
  assert_close(y, layer(x), 1e-5)


def test_auto_route_on_cpu_falls_back_to_reference_with_one_warning():
  x, w0, w1, _ = _inputs((4,), 2, 2, 1, 2, 2, jnp.float32)
  backend.warn_fallback.cache_clear()
  with pytest.warns(UserWarning, match="btt: no kernel for backend 'cpu'"):
    y = api.btt(x, w0, w1)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    api.btt(x, w0, w1)
  assert jnp.array_equal(y, reference.btt(x, w0, w1))


def test_shape_mismatch_is_a_clear_error():
  x, w0, w1, _ = _inputs((4,), 2, 3, 1, 2, 2, jnp.float32)
  with pytest.raises(ValueError, match="btt shapes do not chain"):
    api.btt(x, w0, w1.transpose(1, 0, 2, 3)[:, :1], interpret=True)


@pytest.mark.parametrize("body,platform,call", [
    ("tpu", "tpu", "tpu_custom_call"), ("gpu", "cuda", "__gpu$xla.gpu.triton")])
def test_compiled_bodies_lower_for_their_backend(body, platform, call):
  """Forward and backward lower to Mosaic TPU / Triton custom calls at d = 2048 -> 1024, rank 2
  (checked without the device; Mosaic's and Triton's own compiler passes only run there)."""
  bf16 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16)
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  x, g, w0, w1 = bf16(512, 2048), bf16(512, 1024), f32(64, 32, 2, 32), f32(32, 64, 2, 32)
  impl, route = api.BODIES[body], backend.Route(body)
  fwd = functools.partial(impl.forward, tile=impl.TILE, route=route)
  bwd = functools.partial(impl.backward, tile=impl.TILE, route=route)
  for fn, args in [(fwd, (x, w0, w1)), (bwd, (x, w0, w1, g))]:
    lowered = jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=[
        jax.export.DisabledSafetyCheck.custom_call(call)])(*args)
    assert call in lowered.mlir_module()


def test_triton_body_only_takes_shapes_it_can_tile():
  w = lambda *shape: jnp.zeros(shape)
  assert kernel_triton.supports(w(32, 32, 1, 32), w(32, 32, 1, 32), 64)       # d = 1024
  assert not kernel_triton.supports(w(32, 32, 3, 32), w(32, 32, 3, 32), 64)   # rank 3
  assert not kernel_triton.supports(w(8, 8, 1, 8), w(8, 8, 1, 8), 64)         # 8-wide dots
  assert not kernel_triton.supports(w(32, 32, 1, 32), w(32, 32, 1, 32), 24)   # token tile


def test_gpu_route_falls_back_on_shapes_triton_cannot_tile(monkeypatch):
  monkeypatch.setattr(backend, "BODIES", {jax.default_backend(): "gpu"})
  backend.warn_fallback.cache_clear()
  x, w0, w1, _ = _inputs((4,), 2, 3, 3, 2, 2, jnp.float32)
  with pytest.warns(UserWarning, match=r"Triton cannot tile w0 \(2, 3, 3, 2\)"):
    y = api.btt(x, w0, w1)
  assert jnp.array_equal(y, reference.btt(x, w0, w1))
