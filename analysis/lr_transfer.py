"""python -m analysis.lr_transfer SWEEP_DIR --out PREFIX

Learning-rate transfer across width: for every parametrization and family, the final eval
loss against learning rate at each width, the best learning rate per width, and how many
factor-2 grid steps it moves from the smallest to the largest width (writes PREFIX.md and
PREFIX.png). Diverged runs count as infinitely bad.
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import runs

KEYS = ["mup.parametrization", "family", "model.width", "optim.lr"]


def final_losses(df: pd.DataFrame) -> pd.DataFrame:
  last = df.sort_values("step").groupby("run").tail(1)
  loss = last["eval_loss"].where(~last["diverged"] & np.isfinite(last["eval_loss"]), np.inf)
  return last.assign(final_loss=loss)[KEYS + ["final_loss"]]


def best_lrs(final: pd.DataFrame) -> pd.DataFrame:
  """Best learning rate per (parametrization, family, width)."""
  idx = final.groupby(KEYS[:3])["final_loss"].idxmin()
  return final.loc[idx].rename(columns={"optim.lr": "best_lr"}).reset_index(drop=True)


def shifts(best: pd.DataFrame) -> pd.DataFrame:
  """Grid steps (log2) the best learning rate moves from the smallest to the largest width."""
  rows = []
  for (param, family), g in best.groupby(KEYS[:2]):
    g = g.sort_values("model.width")
    rows.append({"parametrization": param, "family": family,
                 **{f"best lr @ {w}": lr for w, lr in zip(g["model.width"], g["best_lr"])},
                 "shift (x2 steps)": float(np.log2(g["best_lr"].iloc[-1] / g["best_lr"].iloc[0]))})
  return pd.DataFrame(rows)


def plot(final: pd.DataFrame, path: str) -> None:
  params, families = sorted(final[KEYS[0]].unique()), sorted(final["family"].unique())
  fig, axes = plt.subplots(len(params), len(families), figsize=(3.6 * len(families), 3 * len(params)),
                           squeeze=False, sharey=True)
  for i, param in enumerate(params):
    for j, family in enumerate(families):
      ax = axes[i][j]
      sub = final[(final[KEYS[0]] == param) & (final["family"] == family)]
      for width, g in sub.groupby("model.width"):
        g = g.sort_values("optim.lr")
        ax.plot(g["optim.lr"], g["final_loss"].clip(upper=10), marker="o", label=f"w={width}")
      ax.set(xscale="log", yscale="log", title=f"{family} ({param})", xlabel="learning rate")
  axes[0][0].set_ylabel("final eval loss")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.lr_transfer", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dirs", nargs="+")
  parser.add_argument("--out", required=True, help="output prefix (writes PREFIX.md, PREFIX.png)")
  args = parser.parse_args(argv)
  try:
    final = final_losses(runs.load(args.dirs))
  except runs.AnalysisError as e:
    sys.exit(f"error: {e}")
  table = shifts(best_lrs(final))
  plot(final, args.out + ".png")
  text = ("# Learning-rate transfer across width\n\n"
          "Best final eval loss over a factor-2 learning-rate grid; `shift` is how many grid steps "
          "the best learning rate moves from the smallest to the largest width.\n\n"
          + table.to_markdown(index=False, floatfmt=".3g") + "\n\nCommand: `python -m analysis."
          f"lr_transfer {' '.join(args.dirs)} --out {args.out}`\n")
  with open(args.out + ".md", "w") as f:
    f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
