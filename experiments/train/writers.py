"""What a run writes: ``config.json`` and ``metrics.jsonl`` (the only input of analysis/),
an optional wandb run (offline by default; ``WANDB_MODE`` in the environment overrides
``wandb.mode``) and a progress line on stdout. Process 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

import runfiles
from experiments.errors import ConfigError

WANDB_MODES = ("offline", "online", "disabled")


# Dense bf16 peak FLOP/s per device, by substrings of jax's device_kind.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12,
              "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12}


def peak_flops(device_kind: str) -> float | None:
  """Dense bf16 peak FLOP/s of one device of this ``device_kind``; None where unknown (CPU)."""
  return next((v for k, v in PEAK_FLOPS.items() if k.lower() in device_kind.lower()), None)


def model_flops_utilization(flops_per_second: float) -> float | None:
  """Achieved model FLOP/s over the devices' peak; None where the peak is unknown (CPU)."""
  peak = peak_flops(jax.devices()[0].device_kind)
  return flops_per_second / (peak * jax.device_count()) if peak else None


@dataclasses.dataclass(frozen=True)
class WandbConfig:
  """wandb ``mode`` ('offline', 'online' or 'disabled') and ``project``."""
  mode: str
  project: str

  def __post_init__(self):
    if self.mode not in WANDB_MODES:
      raise ConfigError(f"wandb.mode={self.mode!r} is unknown; valid: {list(WANDB_MODES)}")
    if self.effective_mode not in WANDB_MODES:
      raise ConfigError(f"WANDB_MODE={os.environ['WANDB_MODE']!r} (environment) is unknown; "
                        f"valid: {list(WANDB_MODES)}")

  @property
  def effective_mode(self) -> str:
    """``WANDB_MODE`` from the environment when set (wandb's own switch, so
    ``WANDB_MODE=disabled`` turns a run's wandb off), else ``mode``."""
    return os.environ.get("WANDB_MODE") or self.mode


def check_workdir(workdir: str) -> None:
  """One ConfigError naming ``workdir`` unless it is a writable directory or can be created as
  one (its nearest existing ancestor is a writable directory); writes nothing."""
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"--workdir '{workdir}' cannot be created: '{existing}' is a file")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir '{workdir}' is not writable: '{existing}' is read-only")


class MetricWriter:
  """Appends one JSON object per line; a line with ``"final": true`` marks a finished run."""

  def __init__(self, workdir: str, config: dict, wandb_cfg: WandbConfig, total_steps: int,
               start_step: int = 0):
    """``config``: the run's config as written to ``config.json``; ``start_step``: the step
    training resumes from; later records (from a killed attempt that got past the checkpoint)
    are dropped so no step is logged twice."""
    self.workdir, self.total_steps = workdir, total_steps
    self.active = jax.process_index() == 0
    self._t0, self._last = time.time(), None
    self._wandb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    kept = [r for r in runfiles.read_metrics(workdir) if r["step"] <= start_step]
    tmp = runfiles.metrics_path(workdir) + ".tmp"
    with open(tmp, "w") as f:
      for r in kept:
        runfiles.write_line(f, r)
    os.replace(tmp, runfiles.metrics_path(workdir))
    with open(runfiles.config_path(workdir), "w") as f:
      json.dump(config, f, indent=2, sort_keys=True)
    mode = wandb_cfg.effective_mode
    if mode != "disabled":
      import wandb
      self._wandb = wandb.init(project=wandb_cfg.project, config=config,
                               dir=workdir, mode=mode, name=os.path.basename(workdir.rstrip("/")))

  def write(self, record: dict) -> None:
    if not self.active:
      return
    record = {k: _plain(v) for k, v in record.items()}
    with open(runfiles.metrics_path(self.workdir), "a") as f:
      runfiles.write_line(f, record)
    if self._wandb is not None:
      self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

  def progress(self, step: int, loss: float, examples: int, flops: float) -> None:
    """One line: step, loss, steps/s, examples/s, MFU (where the device peak is known), ETA."""
    if not self.active:
      return
    now = time.time()
    if self._last is not None:
      s0, t0, e0, f0 = self._last
      dt = max(now - t0, 1e-9)
      rate = (step - s0) / dt
      eta = (self.total_steps - step) / max(rate, 1e-9)
      mfu = model_flops_utilization((flops - f0) / dt)
      print(f"step {step:>6d}/{self.total_steps}  loss {loss:.4g}  {rate:6.1f} steps/s  "
            f"{(examples - e0) / dt:8.0f} ex/s  MFU {'n/a' if mfu is None else f'{mfu:.1%}'}  "
            f"eta {eta:5.0f}s", flush=True)
    self._last = (step, now, examples, flops)

  def close(self) -> None:
    if self._wandb is not None:
      self._wandb.finish()


def _plain(v):
  return v.item() if hasattr(v, "item") else v
