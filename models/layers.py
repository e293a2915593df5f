"""Blocks shared by the models; every linear comes from the config's linear factory."""

from typing import Callable

import jax
from flax import nnx

from structured import StructuredLinear

LinearFactory = Callable[..., StructuredLinear]


class FeedForward(nnx.Module):
  """Pre-LN residual feed-forward: h + branch_scale * W2 gelu(W1 LN(h))."""

  def __init__(self, width: int, expansion: int, linear: LinearFactory, rngs: nnx.Rngs,
               branch_scale: float = 1.0):
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.up = linear("ffn", "hidden", width, expansion * width)
    self.down = linear("ffn", "residual_out", expansion * width, width)
    self.branch_scale = branch_scale

  def __call__(self, h):
    return h + self.branch_scale * self.down(jax.nn.gelu(self.up(self.norm(h))))

  def flops_per_token(self) -> int:
    return self.up.flops_per_token() + self.down.flops_per_token()
