"""Vision Transformer: patch embedding, learned positions, pre-LN blocks, pooling, head.

x [B, H, W, C] (or flattened [B, H*W*C]) -> non-overlapping patch x patch patches, each
flattened to patch*patch*C and projected by the factory's 'patch' linear -> (+ a class token)
+ learned positions -> depth x [Attention (not causal), FeedForward] -> LN -> pool (the class
token, or the mean over patches) -> 'head' linear -> logits (float32). ``scan_layers`` stores the
blocks stacked and runs them as one scan (models/stack.py).

The class token and positions are the "embedding" parameters (lookups, no FLOPs); the patch
embedding is a matmul that can be structured, so it counts as non-embedding, like any layer.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from models import stack
from models.layers import (LinearFactory, blocks_flops_per_token, branch_dropout, split_params,
                           transformer_blocks)
from structured import StructureError

LAYER_TYPES = ("patch", "attn", "ffn", "head")
POOLS = ("cls", "mean")


class ViT(nnx.Module):
  def __init__(self, image_shape: tuple[int, int, int], classes: int, width: int, depth: int,
               heads: int, linear: LinearFactory, *, patch: int, pool: str = "cls",
               expansion: int = 4, qk_norm: bool = True, logit_scale: float, rngs: nnx.Rngs,
               branch_scale: float = 1.0, dropout: float = 0.0, dtype=jnp.float32,
               scan_layers: bool = False, remat: str = "none"):
    height, wide, channels = image_shape
    if height % patch or wide % patch:
      valid = [p for p in range(1, min(height, wide) + 1) if not height % p and not wide % p]
      raise StructureError(f"model.patch={patch} does not tile {height}x{wide} images; "
                           f"valid patch sizes: {valid}")
    if pool not in POOLS:
      raise StructureError(f"model.pool='{pool}' is unknown; valid: {list(POOLS)}")
    self.image_shape, self.patch, self.pool, self.dtype = tuple(image_shape), patch, pool, dtype
    self.remat = remat
    self.num_patches = (height // patch) * (wide // patch)
    self.seq_len = self.num_patches + (pool == "cls")
    self.embed = linear("patch", "input", patch * patch * channels, width)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (self.seq_len, width)))
    self.cls = nnx.Param(jnp.zeros((1, width))) if pool == "cls" else None
    self.attn, self.ffn, drop_rngs = transformer_blocks(
        width, depth, heads, expansion, linear, is_causal=False, qk_norm=qk_norm,
        logit_scale=logit_scale, rngs=rngs, branch_scale=branch_scale, dropout=dropout, dtype=dtype,
        scan_layers=scan_layers)
    self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.head = linear("head", "readout", width, classes)
    self.drop = branch_dropout(dropout, drop_rngs)

  def patches(self, x):
    """[B, H, W, C] or [B, H*W*C] -> [B, N, patch*patch*C], patches in row-major order."""
    h, w, c = self.image_shape
    p = self.patch
    x = x.reshape(x.shape[0], h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(x.shape[0], self.num_patches, p * p * c)

  def __call__(self, x_BxHxWxC):
    h_BxNxD = self.embed(self.patches(x_BxHxWxC).astype(self.dtype))
    if self.cls is not None:
      b, _, d = h_BxNxD.shape
      cls_Bx1xD = jnp.broadcast_to(self.cls[...].astype(self.dtype), (b, 1, d))
      h_BxNxD = jnp.concatenate([cls_Bx1xD, h_BxNxD], axis=1)
    h = self.drop(h_BxNxD + self.pos[...].astype(self.dtype))
    h = self.norm(stack.run((self.attn, self.ffn), h, self.remat))
    pooled_BxD = h[:, 0] if self.pool == "cls" else jnp.mean(h, axis=1)
    return self.head(pooled_BxD).astype(jnp.float32)

  def layer_tokens(self, layer) -> int:
    """Tokens per example a linear layer of this model sees: the patch embedding every patch,
    the head the pooled token, block layers every token (patches and the class token)."""
    return self.num_patches if layer is self.embed else 1 if layer is self.head else self.seq_len

  def flops_per_example(self) -> int:
    """Forward FLOPs of one image: the patch embedding on every patch, attention (projections,
    scores, softmax, weighted sum) and FFN on every token, the head once (norms, pooling and
    GELU are left out, as for GPT-2)."""
    blocks = blocks_flops_per_token(self.attn, self.ffn, self.seq_len)
    return (self.num_patches * self.embed.flops_per_token() + self.seq_len * blocks
            + self.head.flops_per_token())

  def param_counts(self) -> dict[str, int]:
    """Total, "embedding" (positions and class token) and non-embedding parameters."""
    return split_params(self, int(self.pos.size + (self.cls.size if self.cls is not None else 0)))
