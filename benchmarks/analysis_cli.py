"""python -m benchmarks.analysis_cli [--repeats 3] [--checkout DIR ...]

Wall time of ``python -m analysis`` (a fresh process: imports, loading, fits, 200 bootstrap
refits per family, plots, reports) on a 25-run synthetic sweep (5 families x 5 widths, 12
evaluations per run, 0.5% noise), for this checkout and any other ``--checkout`` (e.g. main,
to compare before/after). Prints a markdown table: median, min, max over the repeats, and the
machine load. A benchmark script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from analysis import calibration

FAMILIES = {"dense": 1.0, "btt": 3.0, "low_rank": 0.5, "monarch": 2.0, "kronecker": 0.3}


def write_sweep(root: str) -> None:
  df = calibration.sweep(0, 0.005, widths=5, families=FAMILIES)
  for (family, run), g in df.groupby(["family", "run"]):
    os.makedirs(os.path.join(root, run))
    with open(os.path.join(root, run, "config.json"), "w") as f:
      json.dump({"model": {"kind": family}}, f)
    with open(os.path.join(root, run, "metrics.jsonl"), "w") as f:
      for i, row in enumerate(g.itertuples()):
        f.write(json.dumps({"step": int(row.step), "examples": float(row.tokens),
                            "tokens": float(row.tokens), "flops": float(row.flops),
                            "eval_loss": float(row.eval_loss),
                            **({"final": True} if i == len(g) - 1 else {})}) + "\n")


def time_cli(checkout: str, sweep: str, out: str) -> tuple[float, float]:
  """(wall, CPU) seconds of one ``python -m analysis`` process; CPU (user + system) is the
  figure to compare on a shared, loaded machine."""
  env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "-m", "analysis", sweep, "--out", out], env=env, check=True,
                 capture_output=True, cwd=checkout)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
  return time.perf_counter() - t0, cpu


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--checkout", action="append", default=None,
                      help="repository roots to time (repeatable; default: this one)")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    sweep = os.path.join(tmp, "sweep")
    write_sweep(sweep)
    checkouts = args.checkout or ["."]
    times = {c: [] for c in checkouts}
    for i in range(args.repeats):   # checkouts alternate, so load drifts hit them alike
      for checkout in checkouts:
        times[checkout].append(time_cli(checkout, sweep, os.path.join(tmp, f"out{i}")))
    print("| checkout | wall s median [min, max] | CPU s median [min, max] |\n|---|---|---|")
    for checkout in checkouts:
      wall, cpu = np.array(times[checkout]).T
      print(f"| {checkout} | {np.median(wall):.1f} [{wall.min():.1f}, {wall.max():.1f}] | "
            f"{np.median(cpu):.1f} [{cpu.min():.1f}, {cpu.max():.1f}] |")
  print(f"\n25 runs, 300 evaluations; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores")


if __name__ == "__main__":
  main()
