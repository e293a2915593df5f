"""benchmarks/gpt2_floor.py runs end to end in --quick mode and writes its table."""

import pathlib

from benchmarks import gpt2_floor


def test_quick_run_times_every_part_and_writes_the_table(tmp_path):
  out = tmp_path / "floor"
  rows = gpt2_floor.main(["--quick", "--repeats", "1", "--out", str(out)])
  assert [r.name for r in rows] == [
      "full step", "full step, vocab 256", "head fwd+bwd (3 GEMMs + cross-entropy)",
      "GEMM h W", "GEMM dlogits W^T", "GEMM h^T dlogits", "Adam on embedding + head"]
  assert all(len(r.step_s) == 1 and r.step_s[0] > 0 for r in rows)
  text = pathlib.Path(f"{out}.md").read_text()
  assert "| GEMM dlogits W^T |" in text and "Head GEMMs alone:" in text
