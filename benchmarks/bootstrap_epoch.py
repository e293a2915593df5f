"""python -m benchmarks.bootstrap_epoch [--n 1000] [--data PATH]

Times Chinchilla Approach 3 on Epoch AI's extraction of Chinchilla's Figure 4 (240 points after
dropping the 5 highest losses): the full 4,500-start fit, then ``n`` bootstrap refits
(points resampled, as Epoch did), and prints the fit, the alpha/beta/E 95% CIs and the times.
A benchmark script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis import bootstrap, fits
from analysis.data import EPOCH_CSV, epoch_chinchilla


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=int, default=1000, help="bootstrap refits (default: 1000)")
  parser.add_argument("--data", default=EPOCH_CSV, help="Epoch's CSV (default: the vendored copy)")
  args = parser.parse_args(argv)
  n_params, n_data, loss = epoch_chinchilla(args.data)

  t0 = time.perf_counter()
  fit = fits.fit_chinchilla(n_params, n_data, loss)
  t_fit = time.perf_counter() - t0
  weights = bootstrap.run_counts(np.arange(len(loss)), args.n, seed=0)
  t0 = time.perf_counter()
  draws = fits.fit_chinchilla(n_params, n_data, loss, weights_BxN=weights, warm=fit)
  t_boot = time.perf_counter() - t0

  print(f"fit: E={fit.E:.4f} A={fit.A:.1f} B={fit.B:.1f} alpha={fit.alpha:.4f} "
        f"beta={fit.beta:.4f} objective={fit.objective:.5e} converged={bool(fit.converged)}")
  for name in ("E", "alpha", "beta"):
    lo, hi = bootstrap.interval(getattr(draws, name))
    print(f"  {name:5s} 95% CI ({lo:.4f}, {hi:.4f})")
  print(f"| step | seconds |\n|---|---|\n| full fit (4,500 starts, incl. jit) | {t_fit:.1f} |\n"
        f"| {args.n} bootstrap refits (incl. jit) | {t_boot:.1f} |\n"
        f"| bootstrap refits converged | {np.mean(draws.converged):.1%} |")


if __name__ == "__main__":
  main()
