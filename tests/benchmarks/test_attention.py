"""benchmarks/attention.py runs end to end at a tiny shape and writes its table."""

import pathlib

from benchmarks import attention


def test_tiny_run_times_every_form_and_writes_the_table(tmp_path):
  out = tmp_path / "attention"
  rows = attention.main(["--shapes", "2x16", "--blocks", "4", "8", "16", "--repeats", "1",
                         "--out", str(out)])
  assert [r.name for r in rows] == ["library (jax.nn.dot_product_attention)",
                                    "whole (heads ahead)", "blocks of 4", "blocks of 8"]
  assert all(len(r.step_s) == 1 and r.step_s[0] > 0 for r in rows)
  text = pathlib.Path(f"{out}.md").read_text()
  assert "### 2 x 16 positions" in text and "| blocks of 8 |" in text
