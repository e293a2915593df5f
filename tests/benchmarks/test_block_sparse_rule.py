"""benchmarks/block_sparse_rule.py times both paths of masked.matmul and reports the rule's pick."""

from benchmarks import block_sparse_rule
from structured import masked


def test_tiny_run_writes_one_row_per_block_with_the_rules_pick(tmp_path):
  out = tmp_path / "rule"
  block_sparse_rule.main(["--dims", "64", "--tokens", "16", "--densities", "0.25", "--blocks",
                          "8", "16", "32", "--repeats", "1", "--out", str(out)])
  rows = [line.split("|")[1:-1] for line in (tmp_path / "rule.md").read_text().splitlines()
          if line.startswith("| 64 ")]
  assert [int(r[2]) for r in rows] == [8, 16, 32]
  for _, _, block, k, *_, picks, faster in rows:
    want = "blocks" if masked.blocks_beat_dense(int(k), int(block), 64, 64) else "dense"
    assert picks.strip() == want and faster.strip() in ("blocks", "dense")
