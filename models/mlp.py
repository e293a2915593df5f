"""The Compute Better Spent residual MLP.

x -> input projection (d_in -> width) -> depth x [h + W2 gelu(W1 LN(h))] (width -> 4 width ->
width) -> LN -> readout (width -> d_out). Every linear comes from ``linear(layer_type, role,
d_in, d_out)`` so the config decides which ones are structured.
"""

from flax import nnx

from models.layers import FeedForward, LinearFactory

LAYER_TYPES = ("input", "ffn", "readout")


class MLP(nnx.Module):
  def __init__(self, d_in: int, d_out: int, width: int, depth: int, linear: LinearFactory, *,
               expansion: int = 4, rngs: nnx.Rngs):
    self.embed = linear("input", "input", d_in, width)
    self.blocks = nnx.List([FeedForward(width, expansion, linear, rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.readout = linear("readout", "readout", width, d_out)

  def __call__(self, x_BxI):
    h = self.embed(x_BxI.reshape(x_BxI.shape[0], -1))
    for block in self.blocks:
      h = block(h)
    return self.readout(self.norm(h))

  def flops_per_example(self) -> int:
    """Forward FLOPs of the linear layers (norms and activations are O(width), left out)."""
    return (self.embed.flops_per_token() + self.readout.flops_per_token()
            + sum(block.flops_per_token() for block in self.blocks))
