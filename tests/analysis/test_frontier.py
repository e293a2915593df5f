"""Frontiers: monotone, unchanged by duplicate runs, final-only, hull below envelope."""

import numpy as np
import pandas as pd

from analysis import frontier, runs
from conftest import write_run, write_sweep


def test_envelope_is_monotone_and_ignores_duplicates(tmp_path):
  write_sweep(tmp_path / "a")
  df = runs.load([str(tmp_path / "a")])
  df = df[df.family == "dense"]
  front = frontier.envelope(df)
  assert np.all(np.diff(front["flops"]) > 0) and np.all(np.diff(front["eval_loss"]) < 0)
  doubled = pd.concat([df, df.assign(run=df["run"] + "_copy")])
  pd.testing.assert_frame_equal(frontier.envelope(doubled), front)


def test_envelope_mask_per_resample_matches_envelope_of_the_subset():
  rng = np.random.default_rng(0)
  compute, loss = rng.uniform(1, 100, 40), rng.uniform(1, 2, 40)
  include = rng.random((5, 40)) < 0.5
  masks = frontier.envelope_mask(compute, loss, include)
  for row, mask in zip(include, masks):
    sub = frontier.envelope_mask(compute[row], loss[row])
    assert set(np.flatnonzero(row)[sub]) == set(np.flatnonzero(mask))


def test_final_only_drops_intermediate_checkpoints(tmp_path):
  write_run(tmp_path, "long", "dense", 1, [(1.0, 3.0), (2.0, 2.0), (4.0, 1.0)])
  write_run(tmp_path, "short", "dense", 2, [(1.5, 2.5)])
  df = runs.load([str(tmp_path)])
  assert list(frontier.envelope(df)["flops"]) == [1.0, 1.5, 2.0, 4.0]
  assert list(frontier.envelope(df, final_only=True)["flops"]) == [1.5, 4.0]


def test_hull_is_convex_in_log_log_and_under_the_envelope(tmp_path):
  write_run(tmp_path, "r", "dense", 1, [(1.0, 4.0), (2.0, 3.9), (4.0, 1.8), (8.0, 1.9), (16, 1.0)])
  df = runs.load([str(tmp_path)])
  hull = frontier.hull(df)
  assert list(hull["flops"]) == [1.0, 4.0, 16]
  slopes = np.diff(np.log(hull["eval_loss"])) / np.diff(np.log(hull["flops"]))
  assert np.all(np.diff(slopes) >= 0)
