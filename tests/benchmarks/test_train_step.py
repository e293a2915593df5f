"""benchmarks/train_step.py runs end to end in --quick mode and writes its md and csv tables."""

import csv
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import structured

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


def _bench():
  spec = importlib.util.spec_from_file_location("train_step_bench", SCRIPT)
  bench = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = bench   # dataclasses look their module up
  spec.loader.exec_module(bench)
  return bench


def test_quick_run_writes_tables(tmp_path):
  bench = _bench()
  out = tmp_path / "bench"
  rows = bench.main(["--quick", "--parts", "layer", "recipe", "--repeats", "1", "--out", str(out),
                     "--profile", str(tmp_path / "trace")])
  assert [r.name for r in rows] == ["dense w=256", "btt r=1 w=1024", "dense", "btt"]
  assert all(r.flops > 0 and len(r.step_s) == len(r.fwd_s) == 1 for r in rows)
  # model rows also time forward + backward without the optimizer update; layer rows are that
  assert [len(r.grad_s) for r in rows] == [1, 1, 0, 0]
  with open(f"{out}.csv") as f:
    assert len(list(csv.DictReader(f))) == 4
  text = pathlib.Path(f"{out}.md").read_text()
  assert "| btt r=1 w=1024 |" in text and "Load average at start" in text
  assert "| fwd+bwd ms median (min-max) | bwd/fwd |" in text
  traced = sorted(p.name for p in (tmp_path / "trace").iterdir())
  assert traced == ["layer_btt", "layer_dense", "recipe_btt_r_1_w_1024", "recipe_dense_w_256"]
  assert list((tmp_path / "trace" / "layer_btt").rglob("*.xplane.pb"))


def test_rows_keeps_the_dense_baseline_and_the_matching_rows(tmp_path):
  bench = _bench()
  rows = bench.main(["--quick", "--parts", "layer", "--repeats", "1", "--rows", "no such row"])
  assert [r.name for r in rows] == ["dense"]


def test_layer_step_runs_the_forward_and_the_backward():
  """The timed layer step returns y = x W and the gradients for its fixed cotangent dy: with the
  gradient of sum(y), XLA dropped dense's forward product (dead code for a linear map)."""
  step, _, flops, grads = _bench().layer_row("dense", 16, 32)
  assert grads is None   # the layer step is forward + backward already
  y, (d_params, dx) = step()
  w = structured.make("dense", 16, 16, rngs=nnx.Rngs(0)).to_dense()
  x, dy = (jax.random.normal(jax.random.key(k), (32, 16), jnp.float32) for k in (0, 1))
  np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dy @ w.T, rtol=1e-5, atol=1e-5)
  (dw,) = jax.tree.leaves(d_params)
  np.testing.assert_allclose(dw.reshape(w.shape), x.T @ dy, rtol=1e-5, atol=1e-5)
  assert flops == 2 * 16 * 16 * 32


def test_scan_adds_scanned_twins_of_every_model_row():
  rows = _bench().main(["--quick", "--parts", "recipe", "--repeats", "1", "--scan"])
  assert [r.name for r in rows] == [
      "dense w=256", "dense w=256, scanned", "dense w=256, scanned, remat=full",
      "btt r=1 w=1024", "btt r=1 w=1024, scanned", "btt r=1 w=1024, scanned, remat=full"]
  assert len({r.flops for r in rows[:3]}) == len({r.flops for r in rows[3:]}) == 1


def test_several_chunk_counts_time_each_model_row_under_each(monkeypatch):
  """--batch-chunks 1 3: every model row twice, each traced under its count (what batch_chunk
  saw), and the module's counts restored afterwards."""
  from structured import backend
  bench, before, seen = _bench(), dict(backend.BATCH_CHUNKS), []
  batch_chunk = backend.batch_chunk
  monkeypatch.setattr(backend, "batch_chunk",
                      lambda *a: seen.append(dict(backend.BATCH_CHUNKS)) or batch_chunk(*a))
  rows = bench.main(["--quick", "--parts", "recipe", "--repeats", "1", "--batch-chunks", "1", "3"])
  assert [r.name for r in rows] == [f"{m} [batch {c} / loss None chunks]"
                                    for m in ("dense w=256", "btt r=1 w=1024") for c in (1, 3)]
  cpu = jax.default_backend()
  # every function of every row (step, forward, gradients) traced under each count: a step
  # compiled under one count and reused under the other would leave the counts unequal
  assert seen.count({cpu: 1}) == seen.count({cpu: 3}) > 0
  assert backend.BATCH_CHUNKS == before
