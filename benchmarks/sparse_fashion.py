"""python benchmarks/sparse_fashion.py RUNS_DIR --out benchmarks/results/sparse_fashion

Tabulates the Fashion-MNIST sparse comparison (runs of configs/mlp_fashion_sparse.py, one
directory per method, density and seed): final test accuracy as mean ± std over seeds, the
executed and ideal training FLOPs, the final density of the sparse layers and the
time-averaged live parameter count. Writes OUT.md, OUT.csv and OUT.png (accuracy vs ideal FLOPs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import pandas as pd

from experiments import host_allocator

ORDER = ["dense", "static", "set", "rigl", "gmp", "srste"]


def final_records(runs_dir: str) -> pd.DataFrame:
  rows = []
  for name in sorted(os.listdir(runs_dir)):
    path = os.path.join(runs_dir, name, "metrics.jsonl")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      records = [json.loads(line) for line in f]
    if not records or not records[-1].get("final"):   # unfinished: left out
      continue
    last = records[-1]
    with open(os.path.join(runs_dir, name, "config.json")) as f:
      config = json.load(f)
    method = config.get("sparsity", {}).get("method", "none")
    sparse = method != "none"
    rows.append(dict(
        method="dense" if not sparse else method, seed=config["seed"],
        target=config["sparsity"]["density"] if sparse and method != "srste" else
        (0.5 if method == "srste" else 1.0),
        accuracy=last["eval_accuracy"], flops=last["flops"],
        ideal_flops=last.get("ideal_flops", last["flops"]), density=last.get("density", 1.0),
        avg_params=last.get("avg_live_params", last["params"]),
        params=last.get("live_params", last["params"]), time=last["time"]))
  return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> pd.DataFrame:
  g = df.groupby(["target", "method"])
  out = g.agg(seeds=("seed", "nunique"), acc_mean=("accuracy", "mean"), acc_std=("accuracy", "std"),
              flops=("flops", "mean"), ideal_flops=("ideal_flops", "mean"),
              density=("density", "mean"), avg_params=("avg_params", "mean"),
              params=("params", "mean"), time=("time", "median")).reset_index()
  out["order"] = out["method"].map(ORDER.index)
  return out.sort_values(["target", "order"], ascending=[False, True]).drop(columns="order")


def markdown(t: pd.DataFrame, runs_dir: str) -> str:
  load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
  lines = ["| FFN density | method | seeds | test accuracy (%) | training FLOPs executed | ideal | final density | live params | time-avg params |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in t.itertuples():
    lines.append(f"| {r.target:g} | {r.method} | {r.seeds} | {100 * r.acc_mean:.2f} ± "
                 f"{100 * r.acc_std:.2f} | {r.flops:.3g} | {r.ideal_flops:.3g} | {r.density:.3f} | "
                 f"{r.params:,.0f} | {r.avg_params:,.0f} |")
  return "\n".join(lines) + f"\n\nRuns: `{runs_dir}`; machine load at tabulation: `{load}`.\n"


def plot(t: pd.DataFrame, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for method in ORDER:
    rows = t[t["method"] == method]
    if len(rows):
      ax.errorbar(rows["ideal_flops"], 100 * rows["acc_mean"], yerr=100 * rows["acc_std"],
                  fmt="o", capsize=3, label=method)
      for r in rows.itertuples():
        ax.annotate(f"{r.target:g}", (r.ideal_flops, 100 * r.acc_mean), fontsize=7,
                    xytext=(4, 2), textcoords="offset points")
  ax.set_xscale("log")
  ax.set(xlabel="ideal training FLOPs (follow the density)", ylabel="test accuracy (%)",
         title="Fashion-MNIST MLP, FFN layers sparse (label: FFN density)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs_dir")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  t = table(final_records(args.runs_dir))
  t.to_csv(args.out + ".csv", index=False, float_format="%.6g")
  with open(args.out + ".md", "w") as f:
    f.write(markdown(t, args.runs_dir))
  plot(t, args.out + ".png")
  print(markdown(t, args.runs_dir))


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  main()
