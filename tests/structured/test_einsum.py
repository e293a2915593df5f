"""The einsum θ-space family: dense equivalence, closed forms, corners, errors; the benchmark."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from structured import StructureError
from benchmarks.structured_layers import PRESETS, main
from structured.einsum import CORNERS, Einsum, dims_for

INTERIOR = [(0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25),    # ES 'g2'
            (0.33, 0, 0.67, 0, 0.67, 0.33, 0.25),        # ES 'btt13'
            (0.25, 0.5, 0.25, 0.5, 0.25, 0.25, 0.5)]
# square and rectangular both ways, one interior θ each (every new core shape costs a compile)
CASES = [(INTERIOR[0], 64, 144), (INTERIOR[1], 144, 64), (INTERIOR[2], 64, 64)]


def _layer(kind, d_in, d_out, **hparams):
  """A layer with N(0, 1) numpy cores, built abstractly: no random-init compile per core shape
  (test_contract.py covers the real init)."""
  graphdef, state = nnx.split(nnx.eval_shape(
      lambda: structured.make(kind, d_in, d_out, rngs=nnx.Rngs(0), **hparams)))
  rng = np.random.default_rng(0)
  return nnx.merge(graphdef, jax.tree.map(lambda s: rng.standard_normal(s.shape, s.dtype), state))


@pytest.mark.parametrize("theta,d_in,d_out", CASES)
def test_layer_applies_its_dense_matrix_and_closed_forms(theta, d_in, d_out):
  layer = _layer("einsum", d_in, d_out, theta=theta)
  a, b, g, d, e, f, r = layer.dims
  assert a * b * g == d_in and d * e * f == d_out
  targets = [d_in**t for t in theta[:3]] + [d_out**t for t in theta[3:6]]
  assert all(0.5 < k / t < 2 for k, t in zip(layer.dims, targets))
  assert r == max(1, round(min(d_in, d_out) ** theta[6]))
  x = jax.random.normal(jax.random.key(1), (2, 3, d_in))
  want = x @ layer.to_dense()
  np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
  assert layer.num_params() == r * g * f * (a * d + b * e)
  assert layer.flops_per_token() == 2 * r * b * g * d * f * (a + e)
  assert [(c.fan_in, c.fan_out) for c in layer.cores()] == [(a, d * f * r), (b * g * r, e)]
  assert f"a={a}, b={b}, g={g}, d={d}, e={e}, f={f}, r={r}" in repr(layer)


def test_dims_are_the_closest_exact_factorization_cheapest_on_ties():
  # sqrt(512) = 22.6: a, g and e, f are each {16, 32} in some order (equally close); the MACs
  # r g f (a + e) are least, 16*16*(32+32), for a = e = 32, g = f = 16.
  assert dims_for(512, 512, CORNERS["btt"]) == (32, 1, 16, 1, 32, 16, 1)
  # 96^(1/3) = 4.58: the splits 4*4*6, 4*6*4, 6*4*4 tie; MACs b g d f (a + e) = 16*8*(6+8) for
  # a = 6 beat 24*8*(4+8).
  assert dims_for(96, 64, (1 / 3, 1 / 3, 1 / 3, 0.5, 0.5, 0, 0)) == (6, 4, 4, 8, 8, 1, 1)


@pytest.mark.parametrize("kind,hparams,d_in,d_out", [
    ("dense", {}, 64, 144), ("low_rank", {"rank": 3}, 144, 64), ("kronecker", {}, 64, 144),
    ("btt", {"rank": 2}, 64, 144), ("btt", {"rank": 2}, 144, 64)])
def test_corner_reproduces_its_family(kind, hparams, d_in, d_out):
  ref = _layer(kind, d_in, d_out, use_bias=True, **hparams)
  rank = hparams.get("rank", 1)
  theta = (*CORNERS[kind][:6], math.log(rank) / math.log(min(d_in, d_out)))
  at_corner = nnx.eval_shape(lambda: structured.make("einsum", d_in, d_out, rngs=nnx.Rngs(0),
                                                     theta=theta))
  copy = Einsum.from_layer(ref)
  assert copy.dims == at_corner.dims                      # θ picks the family's own factorization
  assert copy.num_params() == ref.num_params() == at_corner.num_params() + d_out   # + bias
  assert copy.flops_per_token() == ref.flops_per_token() == at_corner.flops_per_token()
  x = jax.random.normal(jax.random.key(1), (2, 3, d_in))
  want = ref(x)   # equal up to float32 summation order
  np.testing.assert_allclose(copy(x), want, rtol=1e-5, atol=1e-6 * float(jnp.abs(want).max()))
  np.testing.assert_array_equal(copy.to_dense(), ref.to_dense())


def test_projection_only_at_corners():
  w = _layer("btt", 64, 144, rank=2).to_dense()
  projected = Einsum.project(w, theta="btt", rank=2)
  assert float(jnp.linalg.norm(projected.to_dense() - w) / jnp.linalg.norm(w)) < 1e-4
  with pytest.raises(StructureError, match="projection exists only at the corners"):
    Einsum.project(w, theta=INTERIOR[0])


@pytest.mark.parametrize("theta,d_in,d_out", CASES[:2])
def test_flops_agree_with_xla(theta, d_in, d_out):
  layer = _layer("einsum", d_in, d_out, theta=theta)
  x = jnp.ones((128, d_in))
  cost = jax.jit(lambda v: layer(v)).lower(x).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  assert xla == pytest.approx(128 * layer.flops_per_token(), rel=0.05)


def test_bf16_input_gives_bf16_close_to_float32():
  layer = _layer("einsum", 64, 144, theta=INTERIOR[0])
  x = jax.random.normal(jax.random.key(1), (4, 64))
  y = layer(x.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  want = x @ layer.to_dense()
  np.testing.assert_allclose(y.astype(jnp.float32), want, atol=3e-2 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("kwargs,match", [
    ({"theta": (0.5, 0.5, 0, 0, 1, 0)}, r"has 6 entries, needs 7"),
    ({"theta": (0.5, 0.4, 0, 0, 1, 0, 0)}, r"needs α\+β\+γ = 1 and δ\+ε\+φ = 1, got 0.9 and 1"),
    ({"theta": (1.5, -0.5, 0, 0, 1, 0, 0)}, r"entries must lie in \[0, 1\]"),
    ({"theta": "monarch"}, r"theta='monarch' is unknown; valid names: \['btt', 'dense'"),
    ({"theta": "btt", "dims": (8, 1, 8, 1, 8, 8, 1)}, "theta .* or dims .*, not both"),
    ({"dims": (8, 1, 8, 1, 8, 4, 1)}, r"a\*b\*g = d_in = 64 and d\*e\*f = d_out = 64"),
    ({"dims": (8, 1, 8, 1, 8, 8, 9)}, r"dims=\(8, 1, 8, 1, 8, 8, 9\) gives rank r=9 above "
                                      r"min\(a\*d, b\*e\)=8"),
    ({"theta": (0.5, 0.0, 0.5, 0.0, 0.5, 0.5, 1.0)}, r"gives rank r=64 above min\(a\*d, b\*e\)=8"),
])
def test_bad_theta_is_one_clear_error(kwargs, match):
  with pytest.raises(StructureError, match=match):
    structured.make("einsum", 64, 64, rngs=nnx.Rngs(0), **kwargs)


def test_rank_bound_is_btts_at_the_btt_corner():
  """At the btt corner (64 = 8 x 8) btt and einsum accept rank 8 and both reject rank 9."""
  corner = lambda r: {"dims": (8, 1, 8, 1, 8, 8, r)}
  for kind, hparams in (("btt", {"rank": 8}), ("einsum", corner(8))):
    layer = nnx.eval_shape(lambda: structured.make(kind, 64, 64, rngs=nnx.Rngs(0), **hparams))
    assert layer.num_params() == 8 * 64 * (8 + 8)
  for kind, hparams in (("btt", {"rank": 9}), ("einsum", corner(9))):
    with pytest.raises(StructureError, match="rank.*9"):
      structured.make(kind, 64, 64, rngs=nnx.Rngs(0), **hparams)


def test_unfactorable_width_names_nearest_valid_widths():
  with pytest.raises(StructureError, match=r"cannot split d_in=67.*\(1, 1, 67\).*nearest valid "
                                           r"widths: \[65, 66, 70, 72\]"):
    structured.make("einsum", 67, 64, rngs=nnx.Rngs(0), theta="btt")


def test_benchmark_lists_every_family_with_its_params(tmp_path, capsys):
  out = tmp_path / "table.md"
  rows = main(["--dims", "64", "--batch", "2", "--repeats", "1", "--out", str(out)])
  assert sorted(r["kind"] for r in rows) == sorted(structured.FAMILIES)
  text, printed = out.read_text(), capsys.readouterr().out
  assert "Command: `python -m benchmarks.structured_layers --dims 64" in text and "### d = 64" in printed
  for r in rows:
    assert f"| {r['kind']} |" in text and f"| {r['kind']} |" in printed
    if r["note"]:
      assert "skipped: " in text
      continue
    layer = structured.make(r["kind"], 64, 64, rngs=nnx.Rngs(0), **PRESETS.get(r["kind"], {}))
    assert r["params"] == layer.num_params()
    assert f"| {r['params']:,} | {r['flops']:,} |" in text
    assert r["seconds"] > 0
