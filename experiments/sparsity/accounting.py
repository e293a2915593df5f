"""What a moving-mask run costs, step by step, computed on the host from the plan alone (the
mask counts are fixed by the schedule, not by the data): no device read per step, and a resumed
run recomputes the same sums.

Step t's compute runs with the masks left by step t-1's update. Per step:
  - live parameters N_t: every parameter except the planned layers' masked-out weights;
  - ideal training FLOPs per example: 3 x (executed forward - 2 x the planned layers' masked-out
    weights x the tokens each sees), plus on RigL's update steps the dense weight gradient it
    reads (2 x the masked-out weights per token: its backward costs 2 f_S + f_D instead of 3 f_S);
    slot-stored layers (block_sparse) already execute only their kept blocks, so nothing is
    subtracted for them (their block-sum adds, K b per token, stay counted), but RigL's dense
    gradient is added for them too;
  - executed FLOPs stay 3 x the forward (the masked-dense matmul runs whatever the mask). On
    RigL's update steps a slot-stored layer's run also executes one more forward and backward
    of the batch for the dense gradient (its ``masked.GradProbe``): every ΔT steps, not counted.
Totals: cumulative ideal FLOPs, and the time-averaged parameter count N̄ = (1/t) Σ N_τ ("The
Journey Matters": the N of one scaling law for dense and sparse runs).
"""

from __future__ import annotations

from experiments.sparsity.plan import Plan


class Accounting:
  def __init__(self, plan: Plan, params_now: int, live_now: int, forward_flops: int,
               tokens_per_layer: tuple[int, ...], examples_per_step: int):
    """``params_now``/``live_now``: the model's parameter count and its planned layers' kept
    weights as built (so the rest of the model is params_now - live_now); ``forward_flops``:
    executed forward FLOPs per example; ``tokens_per_layer``: tokens per example each planned
    layer sees (``plan.layers`` order; e.g. a ViT block layer sees every patch token)."""
    self.plan = plan
    self.other_params = params_now - live_now
    self.forward, self.tokens, self.batch = forward_flops, tuple(tokens_per_layer), examples_per_step
    self.weights = sum(lp.cells * lp.block**2 for lp in plan.layers)
    self.updates = set(plan.update_steps())
    self._step, self._param_sum, self._ideal_sum = 0, 0, 0

  def live_weights(self, step: int) -> int:
    """Kept weights of the planned layers after ``step``'s update (0: at init)."""
    return sum(self.plan.live_cells(lp, step) * lp.block**2 for lp in self.plan.layers)

  def live_params(self, step: int) -> int:
    return self.other_params + self.live_weights(step)

  def ideal_flops_per_example(self, step: int) -> int:
    """Ideal training FLOPs of one example at ``step`` (masks after step - 1)."""
    masked_out = [2 * tokens * (lp.cells - self.plan.live_cells(lp, step - 1)) * lp.block**2
                  for tokens, lp in zip(self.tokens, self.plan.layers, strict=True)]
    skipped = sum(m for m, lp in zip(masked_out, self.plan.layers) if not lp.slots)
    flops = 3 * (self.forward - skipped)
    if self.plan.schedule.method == "rigl" and step in self.updates:
      flops += sum(masked_out)
    return flops

  def record(self, step: int) -> dict:
    """The metrics of ``step``: density and live parameters after it, the time-averaged
    parameter count and cumulative ideal FLOPs through it."""
    if step < self._step:
      self._step, self._param_sum, self._ideal_sum = 0, 0, 0
    for t in range(self._step + 1, step + 1):
      self._param_sum += self.live_params(t - 1)
      self._ideal_sum += self.batch * self.ideal_flops_per_example(t)
    self._step = step
    return {"density": self.live_weights(step) / self.weights,
            "live_params": self.live_params(step),
            "avg_live_params": self._param_sum / max(1, step),
            "ideal_flops": self._ideal_sum}
