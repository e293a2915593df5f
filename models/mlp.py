"""The Compute Better Spent residual MLP.

x -> input projection (d_in -> width) -> depth x [h + W2 gelu(W1 LN(h))] (width -> 4 width ->
width) -> LN -> readout (width -> d_out). Every linear comes from ``linear(layer_type, role,
d_in, d_out)`` so the config decides which ones are structured. Blocks take the depth-muP
``branch_scale`` and optional dropout; ``dtype`` is the compute dtype (outputs float32);
``scan_layers`` stores the blocks stacked and runs them as one scan (models/stack.py). Where
that runs faster (structured/backend.py: XLA:CPU, feed-forwards of few FLOPs per byte), the
batch goes through the network in chunks of examples: the same function (dropout draws its masks
per chunk).
"""

import jax.numpy as jnp
from flax import nnx

from models import stack
from models.layers import FeedForward, LinearFactory, dropout_rngs, split_params
from structured import backend

LAYER_TYPES = ("input", "ffn", "readout")


class MLP(nnx.Module):
  def __init__(self, d_in: int, d_out: int, width: int, depth: int, linear: LinearFactory, *,
               expansion: int = 4, rngs: nnx.Rngs, branch_scale: float = 1.0,
               dropout: float = 0.0, dtype=jnp.float32, scan_layers: bool = False,
               remat: str = "none"):
    self.dtype = dtype
    self.remat = remat
    self.embed = linear("input", "input", d_in, width)
    drop_rngs = dropout_rngs(rngs) if dropout else None
    blocks = [FeedForward(width, expansion, linear, rngs, branch_scale, dropout=dropout,
                          dropout_rngs=drop_rngs, dtype=dtype) for _ in range(depth)]
    self.ffn_flops_per_byte = blocks[0].flops_per_byte(dtype) if blocks else float("inf")
    self.blocks = stack.blocks(blocks, scan_layers)
    self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.readout = linear("readout", "readout", width, d_out)

  def __call__(self, x_BxI):
    x_BxI = x_BxI.reshape(x_BxI.shape[0], -1).astype(self.dtype)
    n = x_BxI.shape[0]   # inside nnx.capture (coordinate checks) each layer records one output
    size = n if hasattr(self, "__captures__") else backend.batch_chunk(n, self.ffn_flops_per_byte)
    return jnp.concatenate([self._logits(x_BxI[i:i + size]) for i in range(0, n, size)])

  def _logits(self, x_BxI):
    h = stack.run((self.blocks,), self.embed(x_BxI), self.remat)
    return self.readout(self.norm(h)).astype(jnp.float32)

  def layer_tokens(self, layer) -> int:
    """Tokens per example a linear layer of this model sees: one (an example is one vector)."""
    return 1

  def flops_per_example(self) -> int:
    """Forward FLOPs of the linear layers (norms and activations are O(width), left out)."""
    return (self.embed.flops_per_token() + self.readout.flops_per_token()
            + sum(block.flops_per_token() for block in stack.per_block(self.blocks)))

  def param_counts(self) -> dict[str, int]:
    """Total parameters, all non-embedding (the input projection is a linear layer)."""
    return split_params(self, 0)
