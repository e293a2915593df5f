"""benchmarks/against_commit.py times a row in a worktree of a commit and in this tree."""

import pathlib
import subprocess

from benchmarks import against_commit


def test_tiny_run_alternates_old_and_new_and_removes_its_worktree(tmp_path):
  out = tmp_path / "against"
  text = against_commit.main(["--commit", "HEAD", "--rows", "gpt2 dense", "--rounds", "1",
                              "--steps", "1", "--quick", "--out", str(out)])
  rows = [line for line in text.splitlines() if line.startswith("| 1 | gpt2 dense |")]
  assert len(rows) == 1
  old_ms, new_ms = (float(cell.split("(")[0]) for cell in rows[0].split("|")[3:5])
  assert old_ms > 0 and new_ms > 0
  assert pathlib.Path(f"{out}.md").read_text() == text
  trees = subprocess.run(["git", "worktree", "list"], cwd=against_commit.HERE,
                         capture_output=True, text=True, check=True).stdout
  assert "strux-HEAD-" not in trees
