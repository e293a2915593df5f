"""python -m analysis.study {mlp_fashion,gpt2_bytes} --root RUNS --out RESULTS [--workers 2] [--quick]

A scaling study from one command, resumable (finished runs are skipped):
  1. the study's lr sweep at the muP base width (``--sweep_arg lr``), under RUNS/lr;
  2. the best final eval loss picks the lr, saved to RESULTS/lr.json and RESULTS/lr_sweep.md;
  3. every family and width at that lr, transferred by muP (``--sweep_arg lr=<best>``), RUNS/study;
  4. ``python -m analysis`` on RUNS/study into RESULTS (plots, summary.md, fit_report.md);
  5. RESULTS/commands.md: the exact commands run and how long each stage took.
Sweeps run as ``python -m experiments.sweep`` subprocesses: analysis/ never imports experiments/.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from analysis import __main__ as cli
from analysis import runs
from analysis.runs import AnalysisError

SWEEPS = {"mlp_fashion": "configs/sweeps/scaling_mlp_fashion.py",
          "gpt2_bytes": "configs/sweeps/scaling_gpt2_bytes.py"}


def sweep(study: str, arg: str, root: str, workers: int) -> list[str]:
  """Runs (or resumes) one stage; returns the command. Raises AnalysisError if a run failed."""
  cmd = ["python", "-m", "experiments.sweep", "--sweep", SWEEPS[study], "--sweep_arg", arg,
         "--root", root, "--workers", str(workers)]
  proc = subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True)
  if proc.returncode:
    raise AnalysisError(f"sweep stage '{arg}' failed (rc={proc.returncode}); its last output:\n"
                        f"{(proc.stdout + proc.stderr)[-2000:]}")
  return cmd


def best_lr(lr_root: str) -> tuple[float, str]:
  """Learning rate with the least final eval loss (diverged runs lose) and a markdown table."""
  df = runs.load([lr_root])
  last = df.sort_values("step").groupby("run").tail(1)
  loss = last["eval_loss"].where(~last["diverged"] & np.isfinite(last["eval_loss"]), np.inf)
  table = last.assign(final_eval_loss=loss)[["optim.lr", "final_eval_loss"]].sort_values("optim.lr")
  if not np.isfinite(loss).any():
    raise AnalysisError(f"every lr-sweep run under {lr_root} diverged")
  return float(last.loc[loss.idxmin(), "optim.lr"]), table.to_markdown(index=False, floatfmt=".4g")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("study", choices=sorted(SWEEPS))
  parser.add_argument("--root", required=True, help="where the runs go (resumed if present)")
  parser.add_argument("--out", required=True, help="results directory")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--bootstrap", type=int, default=200)
  parser.add_argument("--quick", action="store_true", help="the seconds-long variant (tests)")
  args = parser.parse_args(argv)
  quick = ",quick" if args.quick else ""
  os.makedirs(args.out, exist_ok=True)
  try:
    t0 = time.time()
    lr_cmd = sweep(args.study, f"lr{quick}", os.path.join(args.root, "lr"), args.workers)
    t1 = time.time()
    lr, table = best_lr(os.path.join(args.root, "lr"))
    with open(os.path.join(args.out, "lr.json"), "w") as f:
      json.dump({"lr": lr}, f)
    with open(os.path.join(args.out, "lr_sweep.md"), "w") as f:
      f.write(f"# lr sweep at the base width\n\nChosen lr: {lr:g}\n\n{table}\n")
    study_root = os.path.join(args.root, "study")
    study_cmd = sweep(args.study, f"lr={lr:g}{quick}", study_root, args.workers)
    t2 = time.time()
    cli_args = [study_root, "--out", args.out, "--bootstrap", str(args.bootstrap)]
    cli.main(cli_args)
    t3 = time.time()
  except AnalysisError as e:
    sys.exit(f"error: {e}")
  commands = [shlex.join(["python", "-m", "analysis.study", *(argv or sys.argv[1:])]),
              "# which runs, in stages:", shlex.join(lr_cmd), shlex.join(study_cmd),
              shlex.join(["python", "-m", "analysis", *cli_args])]
  with open(os.path.join(args.out, "commands.md"), "w") as f:
    f.write("# Commands\n\nFrom the repository root, with PYTHONPATH=. (paths as run):\n\n```bash\n"
            + "\n".join(commands) + "\n```\n\n"
            f"Wall time of this invocation (finished runs are skipped, so a resumed study shows only "
            f"what it ran): lr sweep {t1 - t0:.0f} s, study {t2 - t1:.0f} s, analysis {t3 - t2:.0f} s.\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
