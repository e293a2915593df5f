"""Models: FLOP counts against XLA, golden one-step losses, config smoke runs, model options."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import gpt2_bytes, mlp_cifar, mlp_fashion, mlp_synthetic
import runfiles
from experiments import config as run_config, coord_check, errors
from experiments.tasks import images
from experiments.train import loop as train, sharding, step
from models import factory, layers
from structured import StructureError, backend, mup
from structured.mup import MuP

CONFIGS = {"mlp_synthetic": mlp_synthetic, "gpt2_bytes": gpt2_bytes, "mlp_fashion": mlp_fashion}
HAVE_FASHION = os.path.exists(os.path.join(images.FASHION_MNIST, "t10k-labels-idx1-ubyte.gz"))


def _skip_without_data(name):
  if name == "mlp_fashion" and not HAVE_FASHION:
    pytest.skip(f"Fashion-MNIST not installed at {images.FASHION_MNIST} (make data)")


def build(cfg, spec, *, base_depth=0, zero_init=False, parametrization="mup"):
  """``factory.build`` of a model ConfigDict section; muP against width 32, zero-init off so
  outputs are not trivially zero."""
  mup = MuP(parametrization=parametrization, base_width=32, base_depth=base_depth, rule="adam",
            eps_mup=False, zero_init=zero_init)
  return factory.build(run_config.parse_model(cfg), spec, nnx.Rngs(0), mup)


def _xla_flops(model, x):
  graphdef, state = nnx.split(model)
  cost = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, x).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


@pytest.mark.parametrize("kind,width", [("dense", 512), ("btt", 1024)])
def test_gpt2_flops_match_xla(kind, width):
  config = gpt2_bytes.get_config(f"kind={kind},width={width},depth=2,heads=8")
  spec = {"vocab": 256, "seq_len": 64}
  model = build(config.model, spec)
  tokens = jnp.zeros((4, 64), jnp.int32)
  # XLA also counts softmax, layer norms and GELU (~20 FLOPs per element), which the model
  # count leaves out as Chinchilla does; they are < 5% of the total at these widths (BTT's
  # matmuls shrink as d^1.5, so it needs the larger width)
  executed = model.flops_per_example(count_lookup=False)   # XLA runs the embedding as a lookup
  assert _xla_flops(model, tokens) == pytest.approx(4 * executed, rel=0.05)
  assert model.flops_per_example() - executed == 64 * 2 * 256 * width   # Chinchilla's one-hot matmul
  counts = model.param_counts()
  assert counts["embedding"] == 256 * width + 64 * width
  assert counts["total"] == counts["embedding"] + counts["non_embedding"]


def test_param_counts_leave_out_masked_zeros():
  """A 2:4 sparse FFN stores dense weights but learns half of them; the counts (and the
  trainer's ``params`` metric) say so."""
  spec = {"vocab": 256, "seq_len": 16}
  dense, sparse = (build(gpt2_bytes.get_config(f"kind={kind},width=64,depth=2,heads=2"
                                               ",layers=ffn").model, spec)
                   for kind in ("dense", "nm_sparse"))
  ffn_weights = 2 * 2 * 64 * 256   # depth x (up + down) x width x 4 width
  assert (sparse.param_counts()["non_embedding"]
          == dense.param_counts()["non_embedding"] - ffn_weights // 2)
  assert sparse.param_counts()["embedding"] == dense.param_counts()["embedding"] == (256 + 16) * 64


def test_mlp_flops_match_xla():
  config = mlp_synthetic.get_config("kind=dense,width=256")   # BTT layers: tests/structured
  model = build(config.model, {"d_in": 16, "d_out": 4})
  x = jnp.zeros((32, 16))
  assert _xla_flops(model, x) == pytest.approx(32 * model.flops_per_example(), rel=0.05)


# Golden values: loss after one optimizer step from the fixed seed. If a deliberate change
# (init, data, optimizer) moves them, rerun this test, check the new value is sane and paste it.
GOLDEN = {"mlp_synthetic": 4.029542, "gpt2_bytes": 5.499989, "mlp_fashion": 2.268983}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_golden_one_step(name):
  _skip_without_data(name)
  config = CONFIGS[name].get_config("runlocal")
  with config.unlocked():
    config.mesh.data = 1
    config.optim.warmup_steps = 0   # a full-size step, so the golden loss moves off its init value
  run = train.build(run_config.parse(config))
  task, model, optimizer, mesh = run.task, run.model, run.optimizer, run.mesh
  batch = sharding.shard_batch(task.train_batch(1), mesh)
  step.train_step(model, optimizer, batch, task.loss)
  loss = float(step.eval_step(model, batch, task.loss)["loss"])
  assert loss == pytest.approx(GOLDEN[name], abs=1e-4), (
      f"{name}: one-step loss {loss:.6f} != golden {GOLDEN[name]}; if the change was deliberate, "
      "update GOLDEN in tests/models/test_models.py")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_runlocal_trains_and_loss_decreases(name, tmp_path):
  _skip_without_data(name)
  config = CONFIGS[name].get_config("runlocal,kind=btt")
  train.train_and_evaluate(run_config.parse(config), str(tmp_path))

  losses = [r["train_loss"] for r in runfiles.read_metrics(str(tmp_path))]
  assert losses[-1] < losses[0]


def test_gpt2_data_parallel_and_fsdp_match_one_device():
  def losses(mesh_sizes):
    config = gpt2_bytes.get_config("runlocal,kind=btt")
    with config.unlocked():
      config.mesh.update(mesh_sizes)
    run = train.build(run_config.parse(config))
    task, model, optimizer, mesh = run.task, run.model, run.optimizer, run.mesh
    out = [float(step.train_step(model, optimizer, sharding.shard_batch(task.train_batch(i), mesh),
                                 task.loss)) for i in range(1, 21)]
    return np.array(out), model
  single, _ = losses(dict(data=1, fsdp=1))
  dp, _ = losses(dict(data=8, fsdp=1))
  fsdp, model = losses(dict(data=2, fsdp=4))
  np.testing.assert_allclose(dp, single, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(fsdp, single, atol=1e-5, rtol=1e-5)
  assert any("fsdp" in str(p.sharding.spec) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_missing_dataset_is_one_clear_error(tmp_path):
  config = mlp_fashion.get_config("runlocal")
  with config.unlocked():
    config.data.dir = str(tmp_path)
  with pytest.raises(errors.DataError, match=f"Fashion-MNIST not found: looked for .*{tmp_path}.*"
                     "apt-get install dataset-fashion-mnist"):
    train.build(run_config.parse(config))


# --- model options: per-layer overrides, compute dtype, dropout, depth-muP ---------------

def _tiny(name, **kw):
  """A tiny model config of ``name`` with every field the factory reads."""
  cfg = dict(name=name, kind="dense", width=32, depth=1, heads=2, expansion=4, layers="all",
             use_bias=False, qk_norm=True, tie_embeddings=False, structure={},
             patch=4, pool="cls", overrides={}, dropout=0.0, dtype="float32", scan_layers=False, remat="none")
  return ml_collections.ConfigDict(dict(cfg, **kw))


TINY_SPECS = {"mlp": {"d_in": 16, "d_out": 4}, "gpt2": {"vocab": 64, "seq_len": 8},
              "vit": {"image_shape": (8, 8, 3), "d_in": 192, "d_out": 4}}
TINY_INPUTS = {"mlp": jnp.ones((2, 16)), "gpt2": jnp.arange(16).reshape(2, 8) % 64,
               "vit": jax.random.normal(jax.random.key(0), (2, 8, 8, 3))}


def test_overrides_change_exactly_the_named_layer_types():
  overrides = {"attn": {"kind": "low_rank", "rank_frac": 0.25}, "head": {"kind": "dense"}}
  cfg = _tiny("vit", kind="btt", structure={"rank": 1}, overrides=overrides)
  model = build(cfg, TINY_SPECS["vit"])
  kinds = {path: type(layer).kind for path, layer in mup.structured_layers(model).items()}
  expected = {"embed": "btt", "attn": "low_rank", "ffn": "btt", "head": "dense"}
  assert kinds == {path: expected[path[0]] for path in kinds}
  assert {model.attn[0].q.rank, model.attn[0].o.rank} == {8}   # ceil(0.25 * 32)
  # without overrides the same config structures attention with btt
  cfg.overrides = {}
  plain = build(cfg, TINY_SPECS["vit"])
  assert type(plain.attn[0].q).kind == "btt" and type(plain.head).kind == "btt"


@pytest.mark.parametrize("name,overrides,message", [
    ("gpt2", {"atn": {"kind": "btt"}},
     r"unknown layer type 'atn' .*valid: \['attn', 'ffn', 'head'\]"),
    ("mlp", {"patch": {"kind": "btt"}},
     r"unknown layer type 'patch' .*valid: \['input', 'ffn', 'readout'\]"),
    ("gpt2", {"attn": {"kind": "lowrank"}},
     r"unknown structure kind 'lowrank'; valid kinds: .*'low_rank'"),
    ("gpt2", {"attn": {"rank": 2}}, r"overrides.attn needs a 'kind'"),
    ("gpt2", {"attn": {"kind": "low_rank", "rnk": 2}},
     r"no hyperparameter\(s\) \['rnk'\]; valid: \['rank', 'rank_frac'\]"),
])
def test_override_typos_are_one_clear_error(name, overrides, message):
  with pytest.raises(errors.USER_ERRORS, match=message):
    build(_tiny(name, overrides=overrides), TINY_SPECS[name])


@pytest.mark.parametrize("field,value,message", [
    ("dtype", "float16", r"model.dtype='float16' is unknown; valid: \['float32', 'bfloat16'\]"),
    ("dropout", 1.0, r"model.dropout=1.0 must be in \[0, 1\)"),
])
def test_bad_model_option_is_one_clear_error(field, value, message):
  with pytest.raises(StructureError, match=message):
    build(_tiny("mlp", **{field: value}), TINY_SPECS["mlp"])
  with pytest.raises(StructureError, match=r"mup.base_depth=-1 must be an int >= 0"):
    build(_tiny("mlp"), TINY_SPECS["mlp"], base_depth=-1)


def _forward(model, x):
  return nnx.jit(lambda m, v: m(v))(model, x)   # one compile beats many eager op compiles


@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_bfloat16_forward_is_close_to_float32(name):
  f32 = build(_tiny(name, kind="btt"), TINY_SPECS[name])
  bf16 = build(_tiny(name, kind="btt", dtype="bfloat16"), TINY_SPECS[name])
  logits, reference = _forward(bf16, TINY_INPUTS[name]), _forward(f32, TINY_INPUTS[name])
  recorded = coord_check.layer_outputs(bf16, TINY_INPUTS[name])
  assert logits.dtype == jnp.float32
  assert {p.dtype for p in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype(jnp.float32)}
  assert len(recorded) == len(mup.structured_layers(bf16))
  assert {y.dtype for y in recorded.values()} == {jnp.dtype(jnp.bfloat16)}   # the layers ran in bf16
  error = jnp.linalg.norm(logits - reference) / jnp.linalg.norm(reference)
  assert 1e-4 < error < 3e-2   # bf16 rounding (8 mantissa bits): visible, and small


def test_dropout_eval_mode_equals_no_dropout_and_train_mode_differs():
  x, spec = TINY_INPUTS["gpt2"], TINY_SPECS["gpt2"]   # ViT shares the blocks and embedding dropout
  plain = build(_tiny("gpt2"), spec)
  model = build(_tiny("gpt2", dropout=0.5), spec)
  assert not jax.tree.leaves(nnx.state(plain, nnx.RngState))   # rate 0: no dropout state at all
  assert jax.tree.all(jax.tree.map(jnp.array_equal, nnx.state(model, nnx.Param),
                                   nnx.state(plain, nnx.Param)))   # same seed, same weights
  evaluated = nnx.view(model, deterministic=True)
  reference = _forward(plain, x)
  np.testing.assert_array_equal(_forward(evaluated, x), reference)
  np.testing.assert_array_equal(_forward(evaluated, x), reference)
  first, second = _forward(model, x), _forward(model, x)   # train mode (default): fresh masks
  assert not np.allclose(first, reference) and not np.allclose(first, second)


def _residual_rms(model, x):
  h = model.embed(x)
  for block in model.blocks:
    h = block(h)
  return float(jnp.sqrt(jnp.mean(jnp.square(h))))


def test_depth_mup_branch_scale_keeps_the_residual_stream_order_one():
  for name, per_layer in (("mlp", 1), ("gpt2", 2), ("vit", 2)):
    model = build(_tiny(name, depth=8), TINY_SPECS[name], base_depth=2)
    scales = [branch.branch_scale for branch in mup.residual_branches(model).values()]
    assert scales == [pytest.approx(0.5)] * (per_layer * 8)   # sqrt(2 / 8) on every branch
  x = jax.random.normal(jax.random.key(0), (256, 16))
  rms = {(depth, base): _residual_rms(build(_tiny("mlp", depth=depth), TINY_SPECS["mlp"],
                                                  base_depth=base), x)
         for depth in (2, 16) for base in (0, 2)}
  assert rms[16, 2] / rms[2, 2] == pytest.approx(1.0, abs=0.1)   # O(1) in depth
  assert rms[16, 0] / rms[2, 0] > 1.3   # grows ~ sqrt(depth) without the branch multiplier


@pytest.mark.parametrize("head", ["tied", "dense", "btt"])
def test_lm_loss_in_position_chunks_equals_whole_logits(head, monkeypatch):
  """The LM loss run over chunks of positions (backend.loss_chunk: 3 + 3 + 2 of 8), each on the
  head's logits in the layout it leaves them (a BTT head's [vocab, N, 1], tokens last, with its
  bias), gives xent(model(x), y) and its gradients, float32 1e-5."""
  overrides = {"head": {"kind": "btt", "rank": 1}} if head == "btt" else {}
  model = build(_tiny("gpt2", tie_embeddings=head == "tied", overrides=overrides,
                      use_bias=head == "btt"), TINY_SPECS["gpt2"])
  x = TINY_INPUTS["gpt2"]
  y = (x * 7 + 3) % 64
  if head == "btt":   # the path under test: logits in BTT's own blocks, not [N, vocab]
    assert model.head.output_blocks(jnp.ones((5, 32))).shape == (64, 5, 1)
    model.head.bias[...] = jax.random.normal(jax.random.key(3), (64,))
  whole = lambda m: step.xent(m(x), y)
  monkeypatch.setattr(backend, "LOSS_CHUNKS", {jax.default_backend(): 3})
  assert backend.loss_chunk(8) == 3
  chunked = lambda m: step.lm_xent(m, x, y)
  (value_w, grads_w), (value_c, grads_c) = (nnx.value_and_grad(f)(model) for f in (whole, chunked))
  np.testing.assert_allclose(value_c, value_w, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               nnx.state(grads_c), nnx.state(grads_w))


@pytest.mark.parametrize("a,b", [(6, 10), (60, 1), (1, 60)])
def test_xent_blocks_equals_xent_of_the_logits_they_hold(a, b):
  """``step.xent_blocks`` of [A, N, B] blocks (class a B + b at [a, n, b]): the three layouts
  heads leave (BTT tokens in the middle, tokens last, any layer's [1, N, d_out]) give xent of
  the [N, A B] logits and its gradient, float32 1e-5."""
  blocks = jax.random.normal(jax.random.key(0), (a, 7, b))
  labels = jax.random.randint(jax.random.key(1), (7,), 0, a * b)
  as_logits = lambda blocks: jnp.swapaxes(blocks, 0, 1).reshape(7, a * b)
  (v_blocks, g_blocks), (v_whole, g_whole) = (
      jax.value_and_grad(f)(blocks) for f in (lambda t: step.xent_blocks(t, labels),
                                               lambda t: step.xent(as_logits(t), labels)))
  np.testing.assert_allclose(v_blocks, v_whole, rtol=1e-5)
  np.testing.assert_allclose(g_blocks, g_whole, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scan", [False, True])
def test_mlp_in_batch_chunks_equals_whole_batch(scan, monkeypatch):
  """The MLP run over chunks of its batch (backend.batch_chunk: 4 + 4 + 2 of 10 examples) gives
  the whole batch's outputs and gradients, float32 1e-5, blocks per block or scanned."""
  model = build(_tiny("mlp", kind="btt", structure={"rank": 1}, depth=2, use_bias=True,
                      scan_layers=scan), TINY_SPECS["mlp"])
  x = jax.random.normal(jax.random.key(1), (10, 16))
  r = jax.random.normal(jax.random.key(2), (10, 4))

  def value_grads():   # a new function each time: make_jaxpr caches traces per function
    loss = lambda m, x: jnp.sum(m(x) * r)
    return nnx.value_and_grad(loss, argnums=(0, 1))(model, x), jax.make_jaxpr(loss)(model, x)

  monkeypatch.setattr(jax, "device_count", lambda: 1)   # the tests run on 8 CPU devices
  monkeypatch.setattr(backend, "BATCH_CHUNKS", {})
  (whole, (g_whole, gx_whole)), jaxpr_whole = value_grads()
  monkeypatch.setattr(backend, "BATCH_CHUNKS", {jax.default_backend(): 3})
  monkeypatch.setattr(backend, "MIN_CHUNK_EXAMPLES", 1)
  (chunked, (g_chunked, gx_chunked)), jaxpr_chunked = value_grads()
  layers = [str(j).count("custom_vjp_call") for j in (jaxpr_whole, jaxpr_chunked)]   # base.bmm
  assert layers[1] == 3 * layers[0]   # three chunks ran
  tol = dict(rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(chunked, whole, **tol)
  np.testing.assert_allclose(gx_chunked, gx_whole, **tol)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), nnx.state(g_chunked),
               nnx.state(g_whole))


@pytest.mark.parametrize("arg,chunk", [
    ("kind=btt,rank=1,width=1024", 256),   # 24 FLOPs per byte its up-projection writes: chunks
    ("kind=tt,cores=3,rank=2,width=1024", 256),   # 52
    ("kind=monarch,blocks=4,width=512", 1024),   # 80: whole
    ("kind=dense,width=256", 1024)])             # 128
def test_batch_chunk_rule_picks_the_measured_recipes(arg, chunk, monkeypatch):
  """On one CPU device the CIFAR recipe's BTT and TT MLPs run their batch of 1024 in 4 chunks,
  Monarch's and dense's whole (the measurements behind backend.BATCH_CHUNKS); on several
  devices or off CPU every model runs whole."""
  cfg = mlp_cifar.get_config(arg)
  model = factory.build(run_config.parse_model(cfg.model), {"d_in": 3072, "d_out": 10},
                        nnx.Rngs(0), run_config.parse(cfg).mup)
  ask = lambda: backend.batch_chunk(1024, model.ffn_flops_per_byte)
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  assert ask() == chunk
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  assert ask() == 1024
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert ask() == 1024


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_attention_equals_the_library_and_skips_the_masked_keys(causal, dtype, tol, monkeypatch):
  """layers.attention gives jax.nn.dot_product_attention's outputs and gradients (float32 1e-5,
  bfloat16 2e-2), in query blocks of 3 + 3 + 3 + 1 of 10 positions; causal, each block's
  products cover only the keys it sees (64 of the 100 scores), else one block covers all."""
  monkeypatch.setattr(backend, "QUERY_BLOCKS", {jax.default_backend(): 4})
  monkeypatch.setattr(backend, "MIN_QUERY_BLOCK", 1)
  assert backend.query_block(10) == 3
  q, k, v, ct = (jax.random.normal(key, (2, 10, 3, 4), dtype)
                 for key in jax.random.split(jax.random.key(0), 4))
  ours = lambda q, k, v: layers.attention(q, k, v, scale=0.3, is_causal=causal)
  library = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=0.3, is_causal=causal)
  for a, b in zip(*(jax.tree.leaves((lambda y, pullback: (y, pullback(ct)))(*jax.vjp(f, q, k, v)))
                    for f in (ours, library))):
    assert a.dtype == dtype
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol)
  scores = [e.outvars[0].aval.shape for e in jax.make_jaxpr(ours)(q, k, v).eqns
            if e.primitive.name == "dot_general" and e.outvars[0].aval.shape[-1] != 4]
  assert scores == ([(2, 3, 3, 3), (2, 3, 3, 6), (2, 3, 3, 9), (2, 3, 1, 10)] if causal
                    else [(2, 3, 10, 10)])


def test_query_block_rule_picks_the_measured_blocks(monkeypatch):
  """On CPU causal attention runs 256 positions in blocks of 64 and 1024 in blocks of 128
  (benchmarks/results/attention_cpu.md), fewer than 64 whole; elsewhere always whole."""
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert [backend.query_block(n) for n in (16, 64, 256, 1024)] == [16, 64, 64, 128]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert backend.query_block(1024) == 1024
