"""Time GPT-2's train step in this tree and at an older commit, alternating fresh processes.

  PYTHONPATH=. python benchmarks/against_commit.py [--commit e3dd319] [--rows "gpt2 dense"]
                                                   [--rounds 3] [--steps 7] [--old-tcmalloc]
                                                   [--out FILE_STEM]

Issue #14's GPT-2 target is a ratio to the code before the train-step work (e3dd319), which no
one process can hold. Each round runs, for every row, a fresh process on a ``git worktree`` of
COMMIT, then one on this tree, so load drifts hit both alike. Each side runs as its own CLIs
run: the old one with the system malloc (e3dd319 had no ``experiments/host_allocator.py``;
``--old-tcmalloc`` for a commit that has it), this one under tcmalloc when installed. A child
builds the row (``train_step.MODELS``, at
``train_step.bench_config``'s sizes) from its own tree's config file, ``experiments.config``,
``models.factory`` and ``experiments.train.optim``, and times the step its training loop runs
(``guarded_train_step`` with the non-finite guard, or the old ``train_step``, which returned
its finite flags) on random tokens: 2 warm-up steps, then ``--steps`` timed. Prints, and with
``--out`` writes ``OUT.md``, each round's median (min-max) ms and new / old of the medians and
of the minima.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(job: dict) -> None:
  """In a tree's own process (cwd and PYTHONPATH = the tree): time the row, print JSON seconds."""
  import importlib

  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from experiments import config
  from experiments.train import optim, step as steps
  from models import factory

  tree = os.path.realpath(os.getcwd())
  if not os.path.realpath(factory.__file__).startswith(tree + os.sep):
    raise SystemExit(f"imported {factory.__file__}, not the tree under test {tree}")
  raw = importlib.import_module(f"configs.{job['config']}").get_config(job["arg"])
  for key, value in job["overrides"].items():
    *parents, leaf = key.split(".")
    node = raw
    for name in parents:
      node = node[name]
    node[leaf] = value
  cfg = config.parse(raw)
  vocab, seq = cfg.data.vocab, cfg.data.seq_len
  tokens = np.random.default_rng(0).integers(0, vocab, (cfg.batch_size, seq + 1))
  batch = {"x": jnp.asarray(tokens[:, :-1]), "y": jnp.asarray(tokens[:, 1:])}
  spec = {"vocab": vocab, "seq_len": seq}
  model = factory.build(cfg.model, spec, nnx.Rngs(0), cfg.mup)
  base = factory.build_base(cfg.model, spec, cfg.mup)
  tx, _, _ = optim.make(cfg.optim, model, base, cfg.mup, cfg.steps, cfg.model.depth)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  if hasattr(steps, "guarded_train_step"):
    from experiments.train.guard import Guard
    guard = Guard.start(nnx.state(model, nnx.Param))
    run = lambda: steps.guarded_train_step(model, optimizer, batch, guard, "lm")
  else:
    run = lambda: steps.train_step(model, optimizer, batch, "lm")
  seconds = []
  for i in range(2 + job["steps"]):
    start = time.perf_counter()
    jax.block_until_ready(run())
    if i >= 2:
      seconds.append(time.perf_counter() - start)
  print(json.dumps(seconds))


def run_child(tree: str, job: dict, tcmalloc: bool) -> list[float]:
  env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
  env.update(PYTHONPATH=tree, WANDB_MODE="disabled")
  command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
  if tcmalloc:
    command = [sys.executable, "-m", "experiments.host_allocator", *command]
  out = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
  if out.returncode:
    raise SystemExit(f"the child in {tree} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def malloc(tcmalloc: bool) -> str:
  return "tcmalloc" if tcmalloc else "system malloc"


@contextlib.contextmanager
def worktree(commit: str):
  """A detached checkout of ``commit`` beside this one, removed afterwards."""
  path = tempfile.mkdtemp(prefix=f"strux-{commit}-")
  subprocess.run(["git", "worktree", "add", "--detach", path, commit], cwd=HERE, check=True,
                 capture_output=True)
  try:
    yield path
  finally:
    subprocess.run(["git", "worktree", "remove", "--force", path], cwd=HERE, capture_output=True)


def main(argv: list[str] | None = None) -> str:
  from benchmarks.timing import cpu_label, ms_range
  from benchmarks.train_step import MODELS, bench_config
  from experiments import host_allocator

  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--commit", default="e3dd319", help="the old code (default: before #14)")
  parser.add_argument("--rows", nargs="+", default=["gpt2 dense", "gpt2 btt r=4"],
                      choices=[name for name, config, _ in MODELS if config == "gpt2_owt"])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=7, help="timed steps per process")
  parser.add_argument("--old-tcmalloc", action="store_true",
                      help="run the old side under tcmalloc too (a commit that has "
                           "experiments/host_allocator.py)")
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
  parser.add_argument("--out", help="write OUT.md")
  args = parser.parse_args(argv)
  jobs = {}
  for name, config_name, arg in MODELS:
    if name in args.rows:
      cfg = bench_config(config_name, arg, args.quick)
      overrides = {"model.dtype": cfg.model.dtype, "batch_size": cfg.batch_size,
                   "data.seq_len": cfg.data.seq_len, "data.vocab": cfg.data.vocab,
                   "model.width": cfg.model.width, "model.depth": cfg.model.depth}
      jobs[name] = {"config": config_name, "arg": arg, "overrides": overrides,
                    "steps": args.steps}
  tcmalloc = bool(host_allocator.library())
  load = os.getloadavg()
  lines = [f"# GPT-2's train step against {args.commit}, alternating processes\n",
           f"Command: `python benchmarks/against_commit.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n",
           f"{cpu_label()}, load average at start {load[0]:.2f} / {load[1]:.2f} / "
           f"{load[2]:.2f}; old: {args.commit}, {malloc(tcmalloc and args.old_tcmalloc)}; new: this tree, "
           f"{malloc(tcmalloc)}; {args.steps} steps a process after 2 "
           "warm-up steps, median (min-max).\n",
           "| round | row | old ms | new ms | new / old (medians) | new / old (minima) |",
           "|---|---|---:|---:|---:|---:|"]
  print("\n".join(lines), flush=True)
  with worktree(args.commit) as old_tree:
    for r in range(1, args.rounds + 1):
      for name, job in jobs.items():
        old = run_child(old_tree, job, tcmalloc and args.old_tcmalloc)
        new = run_child(HERE, job, tcmalloc)
        ratio = statistics.median(new) / statistics.median(old)
        line = (f"| {r} | {name} | {ms_range(old)} | {ms_range(new)} | {ratio:.3f} | "
                f"{min(new) / min(old):.3f} |")
        print(line, flush=True)
        lines.append(line)
  lines.append(f"\nLoad average at end: {os.getloadavg()[0]:.2f}")
  text = "\n".join(lines) + "\n"
  if args.out:
    with open(args.out + ".md", "w") as f:
      f.write(text)
  return text


if __name__ == "__main__":
  if sys.argv[1:2] == ["--child"]:
    sys.path.remove(os.path.dirname(os.path.abspath(__file__)))   # the tree's packages only
    child(json.loads(sys.argv[2]))
  else:
    main()
