"""The ``sparsity`` config section as a checked, hashable schedule: when masks change and how much.

Keys (fractions are of the run's steps, so one config serves any duration):
  method        'none' | 'static' | 'gmp' | 'set' | 'rigl' | 'srste' | 'spdf'
  density       global target density in (0, 1] of the movable masked layers
  distribution  'uniform' (every layer at ``density``) or 'erk' (Erdős–Rényi-Kernel, RigL)
  delta_t       steps between mask updates (SR-STE: 1 recomputes the mask every step)
  start_frac, end_frac   the window of mask updates: GMP's cubic ramp (Zhu & Gupta 2017; 0.25
                to 0.75 is "The Journey Matters"), SET/RigL's updates (RigL: end 0.75)
  drop_fraction SET/RigL's initial drop fraction α, decayed as (α/2)(1 + cos(π t / T_end))
  lambda_w      SR-STE's sparse-refined decay on the pruned weights
  switch_frac   SPDF: the fraction of training after which the mask is lifted (dense fine-tuning)
All counts derived here are Python ints computed once on the host, so the jitted step and the
host-side accounting read the same numbers.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.errors import ConfigError

METHODS = ("none", "static", "gmp", "set", "rigl", "srste", "spdf")
DISTRIBUTIONS = ("uniform", "erk")


@dataclasses.dataclass(frozen=True)
class Schedule:
  method: str
  steps: int
  density: float
  distribution: str
  delta_t: int
  start_step: int
  end_step: int
  drop_fraction: float
  lambda_w: float
  switch_step: int
  seed: int

  def update_steps(self) -> tuple[int, ...]:
    """Steps (1-based, the mask updated after that step's optimizer update) in the window."""
    first = max(self.delta_t, math.ceil(self.start_step / self.delta_t) * self.delta_t)
    return tuple(range(first, self.end_step + 1, self.delta_t))

  def gmp_density(self, step: int, final: float) -> float:
    """Zhu & Gupta's cubic ramp from density 1 at start_step to ``final`` at end_step."""
    span = max(1, self.end_step - self.start_step)
    progress = min(1.0, max(0.0, (step - self.start_step) / span))
    return final + (1.0 - final) * (1.0 - progress) ** 3

  def drop_fraction_at(self, step: int) -> float:
    """RigL's cosine decay of the drop fraction: (α/2)(1 + cos(π t / T_end))."""
    return self.drop_fraction / 2 * (1 + math.cos(math.pi * step / max(1, self.end_step)))


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
  """The ``sparsity`` section (keys in the module doc), each value checked on construction."""

  method: str
  density: float
  distribution: str
  delta_t: int
  start_frac: float
  end_frac: float
  drop_fraction: float
  lambda_w: float
  switch_frac: float

  def __post_init__(self):
    if self.method not in METHODS:
      raise ConfigError(f"sparsity.method='{self.method}' is unknown; valid: {list(METHODS)}")
    if not 0 < self.density <= 1:
      raise ConfigError(f"sparsity.density={self.density!r} must be in (0, 1] (the fraction of "
                        "weights kept; 0.1 = 90% sparse)")
    if self.distribution not in DISTRIBUTIONS:
      raise ConfigError(f"sparsity.distribution='{self.distribution}' is unknown; valid: "
                        f"{list(DISTRIBUTIONS)}")
    if self.delta_t < 1:
      raise ConfigError(f"sparsity.delta_t={self.delta_t!r} must be an int >= 1 (steps between "
                        "updates)")
    for key in ("start_frac", "end_frac", "switch_frac", "drop_fraction"):
      if not 0 <= getattr(self, key) <= 1:
        raise ConfigError(f"sparsity.{key}={getattr(self, key)!r} must be a fraction in [0, 1]")
    if self.end_frac < self.start_frac:
      raise ConfigError(f"sparsity.end_frac={self.end_frac} is before sparsity.start_frac="
                        f"{self.start_frac}; the update window needs start_frac <= end_frac")
    if self.lambda_w < 0:
      raise ConfigError(f"sparsity.lambda_w={self.lambda_w!r} must be >= 0")


def make(cfg: SparsityConfig, steps: int, seed: int) -> Schedule | None:
  """The schedule of a run of ``steps`` steps (None for method 'none')."""
  if cfg.method == "none":
    return None
  return Schedule(cfg.method, steps, cfg.density, cfg.distribution, cfg.delta_t,
                  round(cfg.start_frac * steps), round(cfg.end_frac * steps), cfg.drop_fraction,
                  cfg.lambda_w, round(cfg.switch_frac * steps), seed)


def layer_densities(cells: list[int], fans: list[tuple[int, int]], density: float,
                    distribution: str) -> list[float]:
  """Per-layer densities whose kept entries total ``density`` x all entries.

  'uniform': every layer at ``density``. 'erk' (Evci et al. 2020): density_l = ε (n_in + n_out)
  / (n_in n_out), ε solved so the totals match; layers that would exceed 1 are made dense and
  ε is solved again for the rest.
  """
  if distribution == "uniform" or not cells:
    return [density] * len(cells)
  dense: set[int] = set()
  while True:
    budget = density * sum(cells) - sum(cells[i] for i in dense)
    raw = {i: (n_in + n_out) / (n_in * n_out) for i, (n_in, n_out) in enumerate(fans)
           if i not in dense}
    eps = budget / sum(raw[i] * cells[i] for i in raw)
    over = {i for i in raw if eps * raw[i] > 1}
    if not over:
      return [1.0 if i in dense else eps * raw[i] for i in range(len(cells))]
    dense |= over
