"""benchmarks/train_step.py runs end to end in --quick mode and writes its md and csv tables."""

import csv
import importlib.util
import pathlib
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


def test_quick_run_writes_tables(tmp_path):
  spec = importlib.util.spec_from_file_location("train_step_bench", SCRIPT)
  bench = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = bench   # dataclasses look their module up
  spec.loader.exec_module(bench)
  out = tmp_path / "bench"
  rows = bench.main(["--quick", "--parts", "layer", "recipe", "--repeats", "1", "--out", str(out)])
  assert [r.name for r in rows] == ["dense w=256", "btt r=1 w=1024", "dense", "btt"]
  assert all(r.flops > 0 and len(r.step_s) == len(r.fwd_s) == 1 for r in rows)
  with open(f"{out}.csv") as f:
    assert len(list(csv.DictReader(f))) == 4
  text = pathlib.Path(f"{out}.md").read_text()
  assert "| btt r=1 w=1024 |" in text and "Load average at start" in text


def test_rows_keeps_the_dense_baseline_and_the_matching_rows(tmp_path):
  spec = importlib.util.spec_from_file_location("train_step_bench", SCRIPT)
  bench = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = bench
  spec.loader.exec_module(bench)
  rows = bench.main(["--quick", "--parts", "layer", "--repeats", "1", "--rows", "no such row"])
  assert [r.name for r in rows] == ["dense"]
