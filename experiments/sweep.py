"""Run a sweep: python -m experiments.sweep --sweep configs/sweeps/FILE.py --root DIR [--backend B]

Expands the sweep file into runs (one workdir each, named deterministically from its
overrides), skips runs already finished, runs the rest and prints a summary table. Backends
(experiments/backends/): ``local`` (subprocesses, ``--workers`` at a time, one CPU core each),
``ray`` (a Ray task per run; ``--ray-address`` joins a running cluster) and ``slurm`` (a
submitit job per run). A killed sweep, restarted, finishes every run exactly once; partial runs
resume from their checkpoints. ``--dry-run`` lists the runs; ``--print-commands`` prints one
shell command per run (``sbatch`` lines with ``--backend slurm``), optionally wrapped by a
``--launcher`` template for TPU pods.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shlex
import sys

import runfiles
from experiments import backends, host_allocator


def load_sweep(path: str, arg: str | None) -> tuple[str, list[dict]]:
  """(config path, runs) of a sweep file."""
  module = _module(path)
  return module.CONFIG, module.get_sweep(arg)


def _module(path: str):
  if not os.path.exists(path):
    sys.exit(f"error: sweep file '{path}' not found; sweeps live in configs/sweeps/*.py")
  spec = importlib.util.spec_from_file_location("_strux_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def resources(path: str, args) -> backends.Resources:
  """A run's resource request: the sweep file's optional ``RESOURCES`` dict (keys cpus, gpus,
  tpus, nodes), then the command line's --cpus/--gpus/--tpus/--nodes."""
  declared = dict(getattr(_module(path), "RESOURCES", {}))
  unknown = set(declared) - {f.name for f in dataclasses.fields(backends.Resources)}
  if unknown:
    sys.exit(f"error: RESOURCES in {path} has unknown keys {sorted(unknown)}; valid: "
             "['cpus', 'gpus', 'nodes', 'tpus']")
  for key in ("cpus", "gpus", "tpus", "nodes"):
    if getattr(args, key) is not None:
      declared[key] = getattr(args, key)
  return backends.Resources(**declared)


def run_name(run: dict) -> str:
  """Readable and unique: the overrides' last key segments and values, plus a short hash."""
  parts = []
  for key, value in sorted(run.items()):
    text = str(value) if key != "arg" else str(value).replace("=", "-")
    parts.append(text if key == "arg" else f"{key.split('.')[-1]}-{value}")
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts))[:80]
  digest = hashlib.sha1(json.dumps(run, sort_keys=True).encode()).hexdigest()[:6]
  return f"{slug}_{digest}"


def command(config: str, run: dict, workdir: str, python: str = sys.executable) -> list[str]:
  cfg = f"{config}:{run['arg']}" if run.get("arg") else config
  overrides = [f"--config.{k}={v}" for k, v in sorted(run.items()) if k != "arg"]
  return [python, "-m", "experiments.main", f"--config={cfg}", *overrides, f"--workdir={workdir}"]


def summary(root: str, names: list[str], status: dict[str, str]) -> str:
  rows = [f"| run | status | final eval_loss | flops |", "|---|---|---|---|"]
  for name in names:
    records = runfiles.read_metrics(os.path.join(root, name))
    last = records[-1] if records else {}
    loss = last.get("eval_loss", float("nan"))
    rows.append(f"| {name} | {status[name]} | {loss:.4g} | {last.get('flops', 0):.3g} |")
  return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sweep", required=True, help="sweep file (configs/sweeps/*.py)")
  parser.add_argument("--sweep_arg", default=None, help="argument passed to the sweep's get_sweep")
  parser.add_argument("--root", default=None, help="parent of the runs' workdirs (default runs/<sweep name>)")
  parser.add_argument("--backend", default="local", help=f"where runs execute: {', '.join(backends.NAMES)}")
  parser.add_argument("--workers", type=int, default=None,
                      help="runs at once (local: default 1, one CPU core each; slurm: the array's "
                           "parallelism, default unlimited)")
  parser.add_argument("--dry-run", action="store_true", help="list the runs and their status, run nothing")
  parser.add_argument("--print-commands", action="store_true",
                      help="print one shell command per run (sbatch lines with --backend slurm)")
  parser.add_argument("--launcher", default=None,
                      help="with --print-commands: a template wrapping each command, {cmd} is replaced "
                           "by the quoted command, e.g. \"gcloud compute tpus tpu-vm ssh NAME "
                           "--worker=all --command={cmd}\"")
  resources = parser.add_argument_group("resources per run (ray, slurm; default: the sweep file's RESOURCES)")
  resources.add_argument("--cpus", type=int, default=None, help="CPU cores per process (default 1)")
  resources.add_argument("--gpus", type=int, default=None, help="GPUs per host (default 0)")
  resources.add_argument("--tpus", type=int, default=None, help="TPU chips per host (ray; default 0)")
  resources.add_argument("--nodes", type=int, default=None,
                         help="hosts per run (slurm: one JAX process per node; default 1)")
  ray = parser.add_argument_group("ray")
  ray.add_argument("--ray-address", default=None,
                   help="a running cluster to join (e.g. 'auto'); default: start a local one")
  ray.add_argument("--ray-num-cpus", type=int, default=None, help="CPUs of the local cluster started")
  slurm = parser.add_argument_group("slurm")
  slurm.add_argument("--partition", default=None, help="Slurm partition")
  slurm.add_argument("--time", type=int, default=60, help="time limit per run, minutes")
  slurm.add_argument("--slurm-executor", default="slurm", choices=("slurm", "local"),
                     help="'local': submitit's local executor (jobs as local processes; tests)")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  config, runs = load_sweep(args.sweep, args.sweep_arg)
  args.root = args.root or os.path.join("runs", os.path.splitext(os.path.basename(args.sweep))[0])
  args.resources = resources(args.sweep, args)
  names = [run_name(run) for run in runs]
  if len(set(names)) != len(names):
    sys.exit("error: the sweep has duplicate runs (same overrides twice)")
  points = [backends.Point(name, os.path.join(args.root, name),
                           tuple(command(config, run, os.path.join(args.root, name))))
            for run, name in zip(runs, names)]
  todo = [p for p in points if not runfiles.is_finished(p.workdir)]
  try:
    backend = backends.load(args.backend)
  except backends.BackendError as e:
    sys.exit(f"error: {e}")

  if args.print_commands:
    for point in points:
      if args.backend == "slurm":
        print(backend.sbatch_line(point, args))
        continue
      if not args.launcher:
        print(shlex.join(point.command))
        continue
      remote = ["python", *point.command[1:]]   # the remote hosts' Python, not this one's path
      print(args.launcher.replace("{cmd}", shlex.quote(shlex.join(remote))))
    return 0
  if args.dry_run:
    for point, run in zip(points, runs):
      print(f"{'todo' if point in todo else 'done'}  {point.name}  {run}")
    print(f"{len(runs)} runs, {len(todo)} to run, root {args.root}")
    return 0

  print(f"sweep {args.sweep}: {len(runs)} runs, {len(runs) - len(todo)} already done, root "
        f"{args.root}, backend {args.backend}", flush=True)
  status = {name: "done (skipped)" for name in names}
  for n, (point, outcome) in enumerate(backend.execute(todo, args), 1):
    finished = runfiles.is_finished(point.workdir)
    if outcome.rc == 0 and finished:
      status[point.name] = "ran" if outcome.ran else "done (by an earlier attempt)"
    else:
      status[point.name] = f"FAILED (rc={outcome.rc}, see log.txt)"
    print(f"[{n}/{len(todo)}] {status[point.name]:6s} {point.name} in {outcome.seconds:.0f}s",
          flush=True)
  print(summary(args.root, names, status))
  return 0 if all(not s.startswith("FAILED") for s in status.values()) else 1


if __name__ == "__main__":
  host_allocator.use_tcmalloc()
  sys.exit(main())
