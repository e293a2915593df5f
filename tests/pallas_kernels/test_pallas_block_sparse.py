"""The block-sparse kernel, in Pallas interpret mode, against the reference and the dense matrix.

Tolerances: max |kernel - exact| / max |exact| <= 1e-5 in float32 and <= 1e-2 in bfloat16, "exact"
being the float32 reference on the (bf16-rounded) inputs (bf16 keeps 8 mantissa bits; measured ~4e-3).
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import backend
from pallas_kernels.block_sparse import api, kernel, reference

TOL = {jnp.float32: 1e-5, jnp.bfloat16: 1e-2}


def _dense(blocks, rows, cols, d_in, d_out):
  w = jnp.zeros((d_in, d_out))
  _, b_in, b_out = blocks.shape
  for blk, r, c in zip(blocks, rows, cols):
    w = w.at[r * b_in:(r + 1) * b_in, c * b_out:(c + 1) * b_out].add(blk)
  return w


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("lead,d_in,d_out,b_in,b_out,rows,cols,tile", [
    ((32,), 32, 32, 8, 8, (0, 1, 3, 2, 0), (0, 1, 3, 0, 2), 8),   # square, 5 of 16 blocks
    ((2, 7), 24, 40, 8, 8, (2, 0, 1, 1), (4, 0, 0, 0), 8),        # 3x5 blocks, repeated pair, empty cols
    ((24,), 48, 16, 16, 8, (1, 2, 0), (1, 0, 1), 16),             # rectangular blocks, 3 of 6
])
def test_forward_and_grads_match_reference(lead, d_in, d_out, b_in, b_out, rows, cols, tile, dtype,
                                           assert_close):
  k = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k[0], (*lead, d_in)).astype(dtype)
  blocks = jax.random.normal(k[1], (len(rows), b_in, b_out)) / b_in**0.5
  ct = jax.random.normal(k[2], (*lead, d_out)).astype(dtype)

  def value_and_grads(fn, x, blocks, ct):
    def loss(x, blocks):
      y = fn(x, blocks, rows, cols, d_out)
      return (y.astype(jnp.float32) * ct).sum(), y
    grads, y = jax.grad(loss, argnums=(0, 1), has_aux=True)(x, blocks)
    return (y, *grads)

  kernel = lambda *a: api.block_sparse_matmul(*a, interpret=True, block_tokens=tile)
  got = value_and_grads(kernel, x, blocks, ct)
  exact = value_and_grads(reference.block_sparse_matmul, x.astype(jnp.float32), blocks,
                          ct.astype(jnp.float32))
  assert got[0].dtype == got[1].dtype == dtype and got[2].dtype == jnp.float32
  for g, e in zip(got, exact):
    assert_close(g, e, TOL[dtype])
  assert_close(exact[0], x.astype(jnp.float32) @ _dense(blocks, rows, cols, d_in, d_out), 1e-5)
  assert not jnp.any(got[0].reshape(-1, d_out // b_out, b_out)[:, [c for c in range(d_out // b_out)
                                                                   if c not in cols]])


@pytest.mark.parametrize("rows,cols,match", [
    ((0, 1), (0,), "2 blocks need 2 rows and cols"),
    ((0, 4), (0, 1), r"rows must be in \[0, 4\)"),
])
def test_bad_block_lists_are_clear_errors(rows, cols, match):
  with pytest.raises(ValueError, match=match):
    api.block_sparse_matmul(jnp.ones((2, 32)), jnp.ones((2, 8, 8)), rows, cols, 32, interpret=True)


def test_kernels_lower_for_mosaic_tpu():
  """The compiled route lowers to a Mosaic TPU custom call (checked without a TPU)."""
  x = jax.ShapeDtypeStruct((512, 1024), jnp.bfloat16)
  blocks = jax.ShapeDtypeStruct((3, 128, 256), jnp.bfloat16)
  rows, cols = (0, 7, 3), (1, 1, 2)
  fwd = functools.partial(kernel.block_sparse_matmul, rows=rows, cols=cols, d_out=1024, tile=256,
                          route=backend.Route("tpu"))
  grads = functools.partial(kernel.block_grads, rows=rows, cols=cols, b_in=128, b_out=256,
                            tile=256, route=backend.Route("tpu"))
  for fn, args in [(fwd, (x, blocks)), (grads, (x, x))]:
    lowered = jax.export.export(jax.jit(fn), platforms=["tpu"])(*args)
    assert "tpu_custom_call" in lowered.mlir_module()
