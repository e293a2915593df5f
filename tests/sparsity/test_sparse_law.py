"""analysis/sparse_law.py on runs with a known law: runs that follow L(N̄, D) fall on one curve,
a method whose losses sit 8% above it does not, and N̄ fits better than the final N."""

import json
import os

import numpy as np

from analysis import sparse_law

E, A, ALPHA, B, BETA = 0.4, 40.0, 0.35, 200.0, 0.4


def law(n, d):
  return E + A / n**ALPHA + B / d**BETA


def write(root, name, method, n_final, n_avg, factor=1.0, noise=0.0, seed=0):
  """A run with eval points at 6 sizes of D, losses law(N̄, D) x factor x (1 + noise)."""
  run = root / name
  os.makedirs(run)
  sparsity = {} if method == "dense" else {"sparsity": {"method": method}}
  (run / "config.json").write_text(json.dumps({"seed": seed, "model": {"kind": "sparse"}, **sparsity}))
  rng = np.random.default_rng(seed)
  with open(run / "metrics.jsonl", "w") as f:
    for i, d in enumerate(np.geomspace(1e4, 1e6, 6)):
      loss = law(n_avg, d) * factor * (1 + noise * rng.standard_normal())
      record = {"step": i + 1, "examples": float(d), "params": n_final, "train_loss": loss,
                "eval_loss": loss}
      if method != "dense":
        record.update(live_params=n_final, avg_live_params=n_avg)
      f.write(json.dumps(record) + "\n")


def test_one_curve_for_dense_and_sparse_and_a_shifted_method_is_off(tmp_path):
  for i, n in enumerate([1e4, 3e4, 1e5, 3e5]):   # 1% noise, like seeds
    write(tmp_path, f"dense{i}", "dense", n, n, noise=0.01, seed=i)
    write(tmp_path, f"gmp{i}", "gmp", n / 5, n / 2, noise=0.01, seed=10 + i)   # pruned late: N̄ > N
    write(tmp_path, f"off{i}", "static", n / 4, n / 4, factor=1.1, noise=0.01, seed=20 + i)
  df = sparse_law.load([str(tmp_path)])
  on = df[df["method"] != "static"]
  rms = {}
  for n in ("n_avg", "n_final"):
    law, table = sparse_law.fit(on, n)
    rms[n] = np.sqrt(np.mean(sparse_law.residuals(law, on, n) ** 2))
    if n == "n_avg":
      assert table.set_index("method")["on_curve"].to_dict() == {"dense": True, "gmp": True}
      assert abs(float(law.alpha) - ALPHA) < 0.1
  assert rms["n_avg"] < rms["n_final"]
  _, table = sparse_law.fit(df, "n_avg")
  off = table.set_index("method").loc["static"]
  assert not off["on_curve"] and off["low"] > 0.02


def test_cli_writes_the_report_and_plot(tmp_path):
  for i, n in enumerate([1e4, 3e4, 1e5, 3e5]):
    write(tmp_path / "runs", f"dense{i}", "dense", n, n, noise=0.01, seed=i)
    write(tmp_path / "runs", f"rigl{i}", "rigl", n / 2, n / 2, noise=0.01, seed=10 + i)
  assert sparse_law.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
  text = (tmp_path / "out" / "sparse_law.md").read_text()
  assert "| rigl | 4 | 24 |" in text and (tmp_path / "out" / "sparse_law.png").exists()
