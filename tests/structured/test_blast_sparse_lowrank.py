"""BLAST and sparse plus low-rank (SLTrain): dense equivalence, closed forms, XLA FLOPs,
projection, init scale and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import structured
from structured import StructureError
from structured.mup import MuP
from structured.sparse_lowrank import Support

CASES = [("blast", {"blocks": 2, "blocks_out": 4, "rank": 3}),
         ("sparse_lowrank", {"rank": 3, "density": 0.1}),
         ("sparse_lowrank", {"rank": 3, "density": 0.1, "impl": "gather"})]
SHAPES = [(32, 32), (32, 96), (96, 32)]

MUP = MuP(parametrization="mup", base_width=64, base_depth=0, rule="adam", eps_mup=False,
          zero_init=True)



def rel_err(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def make(kind, d_in, d_out, seed=0, **hparams):
  """A layer whose every core is nonzero: SLTrain's zero V would hide the low-rank path."""
  layer = structured.make(kind, d_in, d_out, rngs=nnx.Rngs(seed), **hparams)
  if kind == "sparse_lowrank":
    layer.v[...] = jax.random.normal(jax.random.key(seed + 100), layer.v.shape)
  return layer


@pytest.mark.parametrize("kind,hparams", CASES)
def test_layer_applies_its_dense_matrix_in_f32_and_bf16(kind, hparams):
  for (d_in, d_out), lead in zip(SHAPES, [(5,), (2, 3), (2, 1, 3)]):
    layer = make(kind, d_in, d_out, use_bias=True, **hparams)
    layer.bias[...] = jnp.arange(d_out, dtype=jnp.float32) / d_out
    x = jax.random.normal(jax.random.key(1), (*lead, d_in))
    want = x @ layer.to_dense() + layer.bias[...]
    y = layer(x)
    assert y.shape == (*lead, d_out) and y.dtype == jnp.float32
    assert rel_err(y, want) < 1e-5
  y16 = layer(x.astype(jnp.bfloat16))   # the batched, rectangular shape
  assert y16.dtype == jnp.bfloat16 and rel_err(y16.astype(jnp.float32), want) < 2e-2


def test_closed_forms():
  rngs = nnx.Rngs(0)
  blast = structured.make("blast", 64, 144, rngs=rngs, use_bias=True)   # b = 2, r = 4
  assert blast.num_params() - 144 == 4 * (64 + 144 + 2 * 2) == blast.flops_per_token() // 2
  blast = structured.make("blast", 64, 144, rngs=rngs, blocks=4, blocks_out=2, rank=3)
  assert blast.num_params() == 3 * (64 + 144 + 4 * 2) == blast.flops_per_token() // 2
  # input bases p -> r, couplings b_in -> b_out per rank channel, output bases r -> q
  assert [(c.fan_in, c.fan_out) for c in blast.cores()] == [(16, 3), (4, 2), (3, 72)]
  slr = structured.make("sparse_lowrank", 64, 144, rngs=rngs, use_bias=True)   # r 4, 0.05
  nnz = round(0.05 * 64 * 144)
  assert slr.nnz == nnz == 461 and slr.num_params() == 4 * (64 + 144) + nnz + 144
  assert slr.ideal_flops_per_token() == 2 * (4 * (64 + 144) + nnz)
  assert slr.flops_per_token() == 2 * 64 * 144   # 'dense': the materialised GEMM
  gather = structured.make("sparse_lowrank", 64, 144, rngs=rngs, impl="gather")
  assert gather.flops_per_token() == gather.ideal_flops_per_token()
  assert [(c.fan_in, c.fan_out) for c in slr.cores()] == [(64, 4), (4, 144), (3, 7)]


def test_sparse_part_sits_on_a_fixed_seeded_support_that_is_not_trained():
  layer = structured.make("sparse_lowrank", 32, 96, rngs=nnx.Rngs(0), density=0.1)
  sparse = np.asarray(layer.to_dense()).reshape(-1)   # SLTrain's init: V = 0, so W = S
  assert not np.asarray(layer.v[...]).any()
  support = np.asarray(layer.support[...])
  assert len(set(support.tolist())) == layer.nnz == round(0.1 * 32 * 96)
  np.testing.assert_array_equal(np.flatnonzero(sparse), np.sort(support))
  assert isinstance(layer.support, Support) and not isinstance(layer.support, nnx.Param)
  grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 32))) ** 2))(layer)
  assert "support" not in grads and "values" in grads
  other = structured.make("sparse_lowrank", 32, 96, rngs=nnx.Rngs(0), density=0.1, seed=1)
  assert set(np.asarray(other.support[...]).tolist()) != set(support.tolist())


@pytest.mark.parametrize("kind,hparams", [("blast", {})] + CASES[1:])
def test_flops_agree_with_xla(kind, hparams):
  layer = make(kind, 256, 576, **hparams)
  graphdef, state = nnx.split(layer)   # weights as arguments: 'dense' pays U V once per call
  x = jnp.ones((256, 256))
  cost = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, x).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  assert xla == pytest.approx(256 * layer.flops_per_token(), rel=0.05)


# sparse_lowrank members get V ~ N(0, 1) (make): with SLTrain's V = 0 there is no low-rank part,
# and a low-rank part buried under the sparse part's spectrum cannot be told apart from it.
PROJECT_CASES = [("blast", {}, (64, 144)),
                 ("blast", {"blocks": 4, "blocks_out": 2, "rank": 8}, (144, 64)),
                 ("sparse_lowrank", {}, (64, 144))]


@pytest.mark.parametrize("kind,hparams,shape", PROJECT_CASES)
def test_projection_recovers_members_and_fits_random_matrices(kind, hparams, shape):
  w = make(kind, *shape, seed=3, **hparams).to_dense()
  projected = structured.family(kind).project(w, **hparams)
  assert rel_err(projected.to_dense(), w) < 1e-4
  # a random dense W: never worse than the family's random init at its best-fit scale
  w = jax.random.normal(jax.random.key(0), shape)
  init = make(kind, *shape, seed=1, **hparams).to_dense()
  scaled = jnp.sum(init * w) / jnp.sum(init * init) * init
  assert rel_err(structured.family(kind).project(w, **hparams).to_dense(), w) < rel_err(scaled, w)


def test_blast_warm_start_beats_the_papers_random_start_on_members():
  w = make("blast", 64, 144, seed=4).to_dense()
  family = structured.family("blast")
  warm, paper = (rel_err(family.project(w, steps=100, warm_start=ws).to_dense(), w)
                 for ws in (True, False))
  assert warm < 1e-4 < paper   # the paper's start stalls (~8e-2 here) within 100 steps


@pytest.mark.parametrize("shape,hparams,spectrum", [
    ((16, 16), {"blocks": 4, "rank": 6}, "rank 6"),   # r > p: no algebraic start
    ((32, 32), {"blocks": 8, "rank": 8}, "2^-k")])    # the descent from it ends 10x worse
def test_blast_projection_is_never_worse_than_its_starts(shape, hparams, spectrum):
  """The rank-r truncated SVD is a BLAST member (V_j, U_i its blocks, S = 1): the projection
  returns at least as good, and at least as good as its steps=0 start."""
  u, _, vt = np.linalg.svd(np.random.default_rng(0).standard_normal(shape))
  s = np.r_[np.ones(6), np.zeros(shape[0] - 6)] if spectrum == "rank 6" else 2.0 ** -np.arange(32)
  w = jnp.asarray((u * s) @ vt, jnp.float32)
  truncated = float(np.sqrt(np.sum(s[hparams["rank"]:] ** 2)))
  blast = structured.family("blast")
  err = float(jnp.linalg.norm(blast.project(w, **hparams).to_dense() - w))
  start = float(jnp.linalg.norm(blast.project(w, steps=0, **hparams).to_dense() - w))
  slack = 1e-5 * float(jnp.linalg.norm(w))   # float32 rounding of the SVD start
  assert err <= truncated + slack and err <= start + slack


def test_init_output_rms_does_not_depend_on_width():
  """Unit-variance input: blast with rank and blocks' sizes growing with width, sparse_lowrank
  at fixed density (its V = 0, so the sparse part alone) keep the output RMS in a band."""
  rms = {"blast": [], "sparse_lowrank": []}
  for d in (64, 256, 1024):
    x = jax.random.normal(jax.random.key(d), (64, d))
    blast = structured.make("blast", d, d, rngs=nnx.Rngs(d), rank=d // 16)
    rms["blast"].append(float(jnp.sqrt(jnp.mean(blast(x) ** 2))))
    slr = structured.make("sparse_lowrank", d, d, rngs=nnx.Rngs(d))
    rms["sparse_lowrank"].append(float(jnp.sqrt(jnp.mean(slr(x) ** 2))))
  # blast: sqrt(r / p) = sqrt((d / 16) / (d / 2)); sparse: density d inputs of std (density d)^-1/2
  np.testing.assert_allclose(rms["blast"], 8**-0.5, rtol=0.15)
  np.testing.assert_allclose(rms["sparse_lowrank"], 1.0, rtol=0.15)


@pytest.mark.parametrize("kind", ["blast", "sparse_lowrank"])
def test_mup_zero_init_roles_start_at_zero(kind):
  layer = structured.make(kind, 32, 96, rngs=nnx.Rngs(0), role="residual_out", mup=MUP)
  assert not np.asarray(layer.to_dense()).any()


def test_bad_hyperparameters_are_clear_errors():
  rngs = nnx.Rngs(0)
  bad = [("blast", (8, 16), {"rank": 99},
          r"blast rank=99 must be an integer in \[1, min\(d_in, d_out\)=8\]"),
         ("blast", (64, 64), {"blocks": 3}, r"blocks=3 must divide d_in=64; nearest valid d_in: "
                                            r"\[60, 63, 66, 69\]"),
         ("blast", (64, 144), {"blocks_out": 5}, "blocks_out=5 must divide d_out=144"),
         ("blast", (64, 64), {"blocks": 0}, "blocks=0 must be an integer >= 1"),
         ("blast", (64, 64), {"rank": 2.0}, r"rank=2.0 must be an integer in \[1, "),
         ("blast", (64, 64), {"rank": 2, "rank_frac": 0.5}, r"rank=2, rank_frac=0.5: give rank"),
         ("sparse_lowrank", (8, 16), {"seed": -1}, "seed=-1 must be an integer >= 0"),
         ("sparse_lowrank", (8, 16), {"density": "0.1"}, r"density='0.1' must be in \(0, 1\]"),
         ("sparse_lowrank", (8, 16), {"rank": 9},
          r"rank=9 must be an integer in \[1, min\(d_in, d_out\)=8\]"),
         ("sparse_lowrank", (8, 16), {"density": 0.0}, r"density=0.0 must be in \(0, 1\]"),
         ("sparse_lowrank", (8, 16), {"density": 1.5}, r"density=1.5 must be in \(0, 1\]"),
         ("sparse_lowrank", (8, 16), {"impl": "cuda"}, r"impl='cuda' is unknown; valid: "
                                                       r"\['dense', 'gather'\]")]
  for kind, shape, hparams, message in bad:
    with pytest.raises(StructureError, match=message):
      structured.make(kind, *shape, rngs=rngs, **hparams)
