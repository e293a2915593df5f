"""Run a sweep: python -m experiments.sweep --sweep configs/sweeps/FILE.py --root DIR [--workers N]

Expands the sweep file into runs (one workdir each, named deterministically from its
overrides), skips runs already finished, runs the rest as subprocesses (``--workers`` at a
time, one CPU core each on CPU), and prints a summary table. ``--dry-run`` lists the runs;
``--print-commands`` prints one shell command per run for a cluster or a TPU pod.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import runfiles


def load_sweep(path: str, arg: str | None) -> tuple[str, list[dict]]:
  """(config path, runs) of a sweep file."""
  if not os.path.exists(path):
    sys.exit(f"error: sweep file '{path}' not found; sweeps live in configs/sweeps/*.py")
  spec = importlib.util.spec_from_file_location("_strux_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.CONFIG, module.get_sweep(arg)


def run_name(run: dict) -> str:
  """Readable and unique: the overrides' last key segments and values, plus a short hash."""
  parts = []
  for key, value in sorted(run.items()):
    text = str(value) if key != "arg" else str(value).replace("=", "-")
    parts.append(text if key == "arg" else f"{key.split('.')[-1]}-{value}")
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts))[:80]
  digest = hashlib.sha1(json.dumps(run, sort_keys=True).encode()).hexdigest()[:6]
  return f"{slug}_{digest}"


def command(config: str, run: dict, workdir: str) -> list[str]:
  cfg = f"{config}:{run['arg']}" if run.get("arg") else config
  overrides = [f"--config.{k}={v}" for k, v in sorted(run.items()) if k != "arg"]
  return [sys.executable, "-m", "experiments.main", f"--config={cfg}", *overrides,
          f"--workdir={workdir}"]


def _execute(cmd: list[str], workdir: str, core: int | None) -> tuple[int, float]:
  os.makedirs(workdir, exist_ok=True)
  env = dict(os.environ)
  if core is not None:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    if shutil.which("taskset"):
      cmd = ["taskset", "-c", str(core), *cmd]
  t0 = time.time()
  with open(os.path.join(workdir, "log.txt"), "a") as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
  return rc, time.time() - t0


def summary(root: str, names: list[str], status: dict[str, str]) -> str:
  rows = [f"| run | status | final eval_loss | flops |", "|---|---|---|---|"]
  for name in names:
    records = runfiles.read_metrics(os.path.join(root, name))
    last = records[-1] if records else {}
    loss = last.get("eval_loss", float("nan"))
    rows.append(f"| {name} | {status[name]} | {loss:.4g} | {last.get('flops', 0):.3g} |")
  return "\n".join(rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sweep", required=True, help="sweep file (configs/sweeps/*.py)")
  parser.add_argument("--sweep_arg", default=None, help="argument passed to the sweep's get_sweep")
  parser.add_argument("--root", default=None, help="parent of the runs' workdirs (default runs/<sweep name>)")
  parser.add_argument("--workers", type=int, default=1, help="runs at once (CPU: one core each)")
  parser.add_argument("--dry-run", action="store_true", help="list the runs and their status, run nothing")
  parser.add_argument("--print-commands", action="store_true", help="print one shell command per run")
  parser.add_argument("--launcher", default=None,
                      help="with --print-commands: a template wrapping each command, {cmd} is replaced "
                           "by the quoted command, e.g. \"gcloud compute tpus tpu-vm ssh NAME "
                           "--worker=all --command={cmd}\"")
  args = parser.parse_args(argv)

  config, runs = load_sweep(args.sweep, args.sweep_arg)
  root = args.root or os.path.join("runs", os.path.splitext(os.path.basename(args.sweep))[0])
  names = [run_name(run) for run in runs]
  if len(set(names)) != len(names):
    sys.exit("error: the sweep has duplicate runs (same overrides twice)")
  todo = [i for i, name in enumerate(names) if not runfiles.is_finished(os.path.join(root, name))]
  status = {name: "done (skipped)" for name in names}

  if args.print_commands:
    for run, name in zip(runs, names):
      cmd = shlex.join(command(config, run, os.path.join(root, name)))
      print(args.launcher.replace("{cmd}", shlex.quote(cmd)) if args.launcher else cmd)
    return 0
  if args.dry_run:
    for i, name in enumerate(names):
      print(f"{'todo' if i in todo else 'done'}  {name}  {runs[i]}")
    print(f"{len(runs)} runs, {len(todo)} to run, root {root}")
    return 0

  print(f"sweep {args.sweep}: {len(runs)} runs, {len(runs) - len(todo)} already done, root {root}",
        flush=True)
  cores = os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
    futures = {}
    for slot, i in enumerate(todo):
      core = slot % cores if args.workers > 1 else None
      workdir = os.path.join(root, names[i])
      futures[pool.submit(_execute, command(config, runs[i], workdir), workdir, core)] = i
    for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
      i = futures[future]
      rc, seconds = future.result()
      ok = rc == 0 and runfiles.is_finished(os.path.join(root, names[i]))
      status[names[i]] = "ran" if ok else f"FAILED (rc={rc}, see log.txt)"
      print(f"[{n}/{len(todo)}] {status[names[i]]:6s} {names[i]} in {seconds:.0f}s", flush=True)
  print(summary(root, names, status))
  return 0 if all(not s.startswith("FAILED") for s in status.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
