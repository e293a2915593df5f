"""Blocks shared by the models; every linear comes from the config's linear factory.

Both residual blocks are pre-LN, ``h + branch_scale * dropout(branch(LN(h)))``, and are
``structured.mup.ResidualBranch``es: muP finds them by type (depth-muP scales every branch and
the learning rate inside it). The residual stream runs in the model's compute
dtype; norms and structured layers compute in it (params stay float32).
"""

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from models import stack
from structured import StructuredLinear, backend
from structured.mup import ResidualBranch

LinearFactory = Callable[..., StructuredLinear]


def _param_size(module: nnx.Module) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def count_params(model: nnx.Module) -> int:
  """Learnable parameters: each structured layer's ``num_params`` (masked zeros of sparse
  families excluded) plus the size of every other Param (embeddings, norms); stacked blocks
  counted block by block."""
  modules = {tuple(path): module for path, module in nnx.iter_modules(model)}
  stacked = [path for path, module in modules.items() if isinstance(module, stack.Stacked)]
  total = _param_size(model)
  for path, module in modules.items():
    if path in stacked:
      total += sum(count_params(block) for block in module.unstacked()) - _param_size(module)
    elif isinstance(module, StructuredLinear) and not any(path[:len(p)] == p for p in stacked):
      total += module.num_params() - _param_size(module)   # structured layers nest no others
  return total


def split_params(model: nnx.Module, embedding: int) -> dict[str, int]:
  """``count_params`` split into the model's ``embedding`` parameters and the rest."""
  total = count_params(model)
  return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def dropout_rngs(rngs: nnx.Rngs) -> nnx.Rngs:
  """A 'dropout' stream folded off the params key without advancing the params stream, so a
  seed initialises the same weights whatever the dropout rate."""
  return nnx.Rngs(dropout=jax.random.fold_in(rngs["params"].key[...], 0xD0))


def branch_dropout(rate: float, rngs: nnx.Rngs | None) -> nnx.Dropout:
  """Dropout on a branch output; rate 0 holds no RNG state, so the model state is unchanged.
  ``model.eval()`` or ``nnx.view(model, deterministic=True)`` turns it off."""
  return nnx.Dropout(rate, rngs=rngs if rate else None)


class FeedForward(ResidualBranch):
  """Pre-LN residual feed-forward: h + branch_scale * dropout(W2 gelu(W1 LN(h)))."""

  def __init__(self, width: int, expansion: int, linear: LinearFactory, rngs: nnx.Rngs,
               branch_scale: float = 1.0, *, dropout: float = 0.0,
               dropout_rngs: nnx.Rngs | None = None, dtype=jnp.float32):
    self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.up = linear("ffn", "hidden", width, expansion * width)
    self.down = linear("ffn", "residual_out", expansion * width, width)
    self.branch_scale = branch_scale
    self.drop = branch_dropout(dropout, dropout_rngs)

  def __call__(self, h):
    return h + self.branch_scale * self.drop(self.up.then(jax.nn.gelu, self.down, self.norm(h)))

  def flops_per_token(self) -> int:
    return self.up.flops_per_token() + self.down.flops_per_token()

  def flops_per_byte(self, dtype) -> float:
    """FLOPs the up-projection spends per byte of its output in ``dtype`` (backend.batch_chunk)."""
    return self.up.flops_per_token() / (self.up.d_out * jnp.dtype(dtype).itemsize)


class Attention(ResidualBranch):
  """Pre-LN residual multi-head attention with separate q/k/v/o projections.

  Logits are scaled by ``logit_scale`` (muP: 1/d_head; standard: 1/sqrt(d_head)); optional
  QK-LayerNorm per head; ``is_causal`` for language models, off for ViT.
  """

  def __init__(self, width: int, heads: int, linear: LinearFactory, *, qk_norm: bool,
               logit_scale: float, rngs: nnx.Rngs, branch_scale: float = 1.0,
               is_causal: bool = True, dropout: float = 0.0,
               dropout_rngs: nnx.Rngs | None = None, dtype=jnp.float32):
    if width % heads:
      raise ValueError(f"width {width} is not divisible by heads {heads}")
    self.heads, self.logit_scale, self.branch_scale = heads, logit_scale, branch_scale
    self.is_causal = is_causal
    self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.q, self.k, self.v = (linear("attn", "hidden", width, width) for _ in range(3))
    self.o = linear("attn", "residual_out", width, width)
    d_head = width // heads
    self.q_norm = nnx.LayerNorm(d_head, dtype=dtype, rngs=rngs) if qk_norm else None
    self.k_norm = nnx.LayerNorm(d_head, dtype=dtype, rngs=rngs) if qk_norm else None
    self.drop = branch_dropout(dropout, dropout_rngs)

  def __call__(self, h_BxLxD):
    b, l, d = h_BxLxD.shape
    x = self.norm(h_BxLxD)
    q, k, v = (p(x).reshape(b, l, self.heads, d // self.heads) for p in (self.q, self.k, self.v))
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    out_BxLxHxK = attention(q, k, v, scale=self.logit_scale, is_causal=self.is_causal)
    return h_BxLxD + self.branch_scale * self.drop(self.o(out_BxLxHxK.reshape(b, l, d)))

  def flops_per_token(self, seq_len: int) -> int:
    """Projections, scores (q k^T), softmax (3 FLOPs a score, as Chinchilla counts) and the
    weighted sum (A v), over the full L x L square whether causal or not, as Chinchilla counts:
    the model's compute, not what ``attention`` executes (about half the square when causal)."""
    proj = sum(p.flops_per_token() for p in (self.q, self.k, self.v, self.o))
    return proj + 2 * 2 * seq_len * self.q.d_out + 3 * self.heads * seq_len


def attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, *, scale: float, is_causal: bool):
  """Softmax attention [B, L, heads, d_head] -> [B, L, heads, d_head], the numbers
  ``jax.nn.dot_product_attention``'s XLA path gives (float32 logits and softmax, probabilities
  in the values' dtype), computed faster: heads ahead of positions, so each product is one GEMM
  batched over its leading axes, and, causal, in blocks of queries (``backend.query_block``)
  each against only the keys it sees, about (1 + 1/blocks)/2 of the L x L square. XLA:CPU,
  GPT-2's attention fwd+bwd, 8 x 256 positions, 4 heads of 64: 25.6 ms the library's way, 17.7
  with heads ahead, 11.6 in 4 blocks (benchmarks/results/attention_cpu.md)."""
  dtype = v_BxLxHxK.dtype
  q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxK))
  n = q.shape[2]
  size = backend.query_block(n) if is_causal else n
  outs = []
  for start in range(0, n, size):
    stop = min(start + size, n)
    seen = stop if is_causal else n
    logits = jnp.einsum("bhqk,bhsk->bhqs", backend.cast_for_dot(q[:, :, start:stop], dtype),
                        backend.cast_for_dot(k[:, :, :seen], dtype),
                        preferred_element_type=jnp.float32) * scale
    if is_causal:
      visible = jnp.arange(start, stop)[:, None] >= jnp.arange(seen)
      logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    outs.append(jnp.einsum("bhqs,bhsk->bhqk", backend.cast_for_dot(probs, dtype),
                           backend.cast_for_dot(v[:, :, :seen], dtype)).astype(dtype))
  return jnp.swapaxes(jnp.concatenate(outs, axis=2), 1, 2)


def transformer_blocks(width: int, depth: int, heads: int, expansion: int, linear: LinearFactory,
                       *, is_causal: bool, qk_norm: bool, logit_scale: float, rngs: nnx.Rngs,
                       branch_scale: float, dropout: float, dtype, scan_layers: bool):
  """``depth`` pre-LN (Attention, FeedForward) pairs as two roles (GPT-2 and ViT): nnx.Lists, or
  ``stack.Stacked`` with ``scan_layers``; and the dropout stream they draw from (None without
  dropout) for the model's embedding dropout."""
  drop_rngs = dropout_rngs(rngs) if dropout else None
  block = dict(rngs=rngs, branch_scale=branch_scale, dropout=dropout, dropout_rngs=drop_rngs,
               dtype=dtype)
  attn = [Attention(width, heads, linear, qk_norm=qk_norm, logit_scale=logit_scale,
                    is_causal=is_causal, **block) for _ in range(depth)]
  ffn = [FeedForward(width, expansion, linear, **block) for _ in range(depth)]
  return stack.blocks(attn, scan_layers), stack.blocks(ffn, scan_layers), drop_rngs


def blocks_flops_per_token(attn, ffn, seq_len: int) -> int:
  """Forward FLOPs per token of all blocks (attention scores over ``seq_len`` included)."""
  return sum(a.flops_per_token(seq_len) + f.flops_per_token()
             for a, f in zip(stack.per_block(attn), stack.per_block(ffn)))
