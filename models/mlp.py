"""The Compute Better Spent residual MLP.

x -> input projection (d_in -> width) -> depth x [h + W2 gelu(W1 LN(h))] (width -> 4 width ->
width) -> LN -> readout (width -> d_out). Every linear comes from ``linear(layer_type, role,
d_in, d_out)`` so the config decides which ones are structured.
"""

from typing import Callable

import jax
from flax import nnx

from structured import StructuredLinear

LAYER_TYPES = ("input", "ffn", "readout")
LinearFactory = Callable[..., StructuredLinear]


class Block(nnx.Module):
  def __init__(self, width: int, expansion: int, linear: LinearFactory, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.up = linear("ffn", "hidden", width, expansion * width)
    self.down = linear("ffn", "residual_out", expansion * width, width)

  def __call__(self, h):
    return h + self.down(jax.nn.gelu(self.up(self.norm(h))))


class MLP(nnx.Module):
  def __init__(self, d_in: int, d_out: int, width: int, depth: int, linear: LinearFactory, *,
               expansion: int = 4, rngs: nnx.Rngs):
    self.embed = linear("input", "input", d_in, width)
    self.blocks = nnx.List([Block(width, expansion, linear, rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.readout = linear("readout", "readout", width, d_out)

  def __call__(self, x_BxI):
    h = self.embed(x_BxI.reshape(x_BxI.shape[0], -1))
    for block in self.blocks:
      h = block(h)
    return self.readout(self.norm(h))

  def flops_per_example(self) -> int:
    """Forward FLOPs of the linear layers (norms and activations are O(width), left out)."""
    layers = [self.embed, self.readout] + [l for b in self.blocks for l in (b.up, b.down)]
    return sum(layer.flops_per_token() for layer in layers)
