"""python -m analysis SWEEP_DIR [SWEEP_DIR ...] --out DIR

Loads every run under the given sweep (or run) directories and fits each family's compute
frontier L(C) = E + A C^-alpha (by default derived from a joint L(N, D) fit of all its
evaluations, with a parametric residual bootstrap; --method picks another) with 95% CIs, and
writes to DIR:

  scaling.png      loss vs compute (log-log): frontiers, fitted curves, 95% bands
  summary.md       per family: alpha and E with 95% CIs, compute multiplier vs the reference
                   at the best loss both reach
  fit_report.md    convergence, multiplier vs loss, exponent differences, hold-out errors
  multiplier.png, residuals.png, exponents.png

Runs that cannot be used (unreadable config.json, no metrics, a non-finite loss) are left
out and listed with the reason, unfinished ones are used and listed; intervals that would
mislead (a family of 2 runs, ...) are withheld with the reason. Exits non-zero with one message
when the input cannot be analysed at all (no runs, no family with two runs, ...); a family
that cannot be fitted is listed and the others are analysed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from concurrent import futures

import numpy as np

from analysis import bootstrap, fits, plots, report, runs
from analysis.runs import AnalysisError


def holdout(result: bootstrap.FamilyFit) -> dict:
  """Hold out the frontier points above the second-largest run's final compute."""
  front = result.front
  ends = np.sort(front.groupby("run")["flops"].max().to_numpy())
  try:
    if len(ends) < 2:
      raise AnalysisError("one run on the frontier")
    out = fits.holdout(front["flops"], front["eval_loss"], cut=ends[-2])
    return {**out, "cut": ends[-2]}
  except AnalysisError as e:
    return {"error": str(e)}


def _fit_family(job):
  """(name, (FamilyFit, its holdout check)), or (name, the AnalysisError that stopped it)."""
  name, group, kwargs = job
  try:
    result = bootstrap.fit_family(group, **kwargs)
    return name, (result, holdout(result))
  except AnalysisError as e:
    return name, e


def _save_figure(job) -> None:
  fn, fn_args, path = job
  fn(*fn_args, path=path)


def _map(fn, jobs: list, workers: int) -> list:
  """``[fn(job) for job in jobs]``, in up to ``workers`` forked processes where the platform
  forks and JAX is not loaded (family fits and figures are independent and deterministic: the
  output does not depend on ``workers``)."""
  workers = min(workers, len(jobs))
  # forking is unsafe in a multithreaded process, which JAX makes (a notebook or test process
  # that trained a model): run in this process there
  if workers <= 1 or "jax" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
    return [fn(job) for job in jobs]
  with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
    return list(pool.map(fn, jobs))


def analyse(dirs: list[str], out: str, family: str = "model.kind", reference: str = "dense",
            n_boot: int = 200, seed: int = 0, final_only: bool = False,
            method: str = bootstrap.DEFAULT_METHOD, workers: int = 1) -> str:
  """Everything the CLI does; returns the summary markdown. Raises AnalysisError. ``workers``:
  processes fitting families and drawing figures in parallel (the CLI uses every CPU it may)."""
  loaded = runs.load_runs(dirs, family=family)
  df, excluded = runs.exclude_diverged(loaded.df)
  left_out = {**loaded.left_out, **excluded}
  jobs = [(name, group, {"n": n_boot, "seed": seed + i, "final_only": final_only, "method": method})
          for i, (name, group) in enumerate(sorted(df.groupby("family")))]
  results, holdouts, unfitted = {}, {}, {}
  for name, outcome in _map(_fit_family, jobs, workers):
    if isinstance(outcome, AnalysisError):   # e.g. a family with one run so far: say so, go on
      unfitted[name] = str(outcome)
    else:
      results[name], holdouts[name] = outcome
  if not results:
    raise AnalysisError("no family could be fitted: " + "; ".join(unfitted.values()))
  comparisons, skipped = {}, {}
  for name, r in results.items():
    if reference in results and name != reference:
      try:
        comparisons[name] = bootstrap.compare(results[reference], r)
      except AnalysisError as e:   # e.g. frontiers that share no loss range: say so, go on
        skipped[name] = str(e)
  os.makedirs(out, exist_ok=True)
  figures = [(plots.frontiers, (df, results), "scaling.png"),
             (plots.residuals, (results,), "residuals.png"),
             (plots.exponents, (results,), "exponents.png")]
  plottable = {name: c for name, c in comparisons.items()   # a degenerate fit gives no finite k
               if (np.isfinite(c["table"]["k"]) & (c["table"]["k"] > 0)).any()}
  if plottable:
    figures.append((plots.multipliers, (plottable, reference), "multiplier.png"))
  _map(_save_figure, [(fn, fn_args, os.path.join(out, name)) for fn, fn_args, name in figures],
       workers)
  text = report.summary(results, comparisons, reference, n_boot, left_out, skipped,
                        {run: why for run, why in loaded.partial.items() if run not in left_out},
                        unfitted)
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "fit_report.md"), "w") as f:
    f.write(report.fit_report(results, comparisons, holdouts, reference))
  return text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dirs", nargs="+", metavar="SWEEP_DIR",
                      help="sweep directories (folders of run workdirs) or single run workdirs")
  parser.add_argument("--out", required=True, help="output directory (created if missing)")
  parser.add_argument("--family", default="model.kind",
                      help="config key that names a run's family (default: model.kind)")
  parser.add_argument("--reference", default="dense",
                      help="family the compute multipliers compare against (default: dense)")
  parser.add_argument("--bootstrap", type=int, default=200,
                      help="bootstrap resamples of runs per family (default: 200)")
  parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
  parser.add_argument("--final-only", action="store_true",
                      help="build frontiers from end-of-schedule points only")
  parser.add_argument("--method", default=bootstrap.DEFAULT_METHOD, choices=sorted(bootstrap.METHODS),
                      help=f"how L(C) is fitted and resampled (default: {bootstrap.DEFAULT_METHOD}; "
                           "benchmarks/results/ci_calibration.md compares them)")
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  parser.add_argument("--workers", type=int, default=cpus,
                      help="processes fitting families and drawing figures in parallel (default: "
                           "the CPUs this process may use; results do not depend on it)")
  args = parser.parse_args(argv)
  try:
    text = analyse(args.dirs, args.out, args.family, args.reference, args.bootstrap, args.seed,
                   args.final_only, args.method, args.workers)
  except AnalysisError as e:
    sys.exit(f"error: {e}")
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
