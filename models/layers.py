"""Blocks shared by the models; every linear comes from the config's linear factory.

Both residual blocks are pre-LN, ``h + branch_scale * dropout(branch(LN(h)))``, and are
``structured.mup.ResidualBranch``es: muP finds them by type (depth-muP scales every branch and
the learning rate inside it). The residual stream runs in the model's compute
dtype; norms and structured layers compute in it (params stay float32).
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from structured import StructuredLinear
from structured.mup import ResidualBranch

LinearFactory = Callable[..., StructuredLinear]


def _param_size(module: nnx.Module) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def count_params(model: nnx.Module) -> int:
  """Learnable parameters: each structured layer's ``num_params`` (masked zeros of sparse
  families excluded) plus the size of every other Param (embeddings, norms)."""
  total = _param_size(model)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, StructuredLinear):   # structured layers hold no structured sublayers
      total += module.num_params() - _param_size(module)
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
    return h + self.branch_scale * self.drop(self.down(jax.nn.gelu(self.up(self.norm(h)))))

  def flops_per_token(self) -> int:
    return self.up.flops_per_token() + self.down.flops_per_token()


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
    out_BxLxHxK = jax.nn.dot_product_attention(q, k, v, is_causal=self.is_causal,
                                               scale=self.logit_scale)
    return h_BxLxD + self.branch_scale * self.drop(self.o(out_BxLxHxK.reshape(b, l, d)))

  def flops_per_token(self, seq_len: int) -> int:
    """Projections, scores (q k^T), softmax (3 FLOPs a score, as Chinchilla counts) and the
    weighted sum (A v), over the full L x L square that XLA's attention computes (a causal
    mask does not skip work)."""
    proj = sum(p.flops_per_token() for p in (self.q, self.k, self.v, self.o))
    return proj + 2 * 2 * seq_len * self.q.d_out + 3 * self.heads * seq_len


def transformer_blocks(width: int, depth: int, heads: int, expansion: int, linear: LinearFactory,
                       *, is_causal: bool, qk_norm: bool, logit_scale: float, rngs: nnx.Rngs,
                       branch_scale: float, dropout: float, dtype):
  """``depth`` pre-LN (Attention, FeedForward) pairs as two nnx.Lists (GPT-2 and ViT), and the
  dropout stream they draw from (None without dropout) for the model's embedding dropout."""
  drop_rngs = dropout_rngs(rngs) if dropout else None
  block = dict(rngs=rngs, branch_scale=branch_scale, dropout=dropout, dropout_rngs=drop_rngs,
               dtype=dtype)
  attn = nnx.List([Attention(width, heads, linear, qk_norm=qk_norm, logit_scale=logit_scale,
                             is_causal=is_causal, **block) for _ in range(depth)])
  ffn = nnx.List([FeedForward(width, expansion, linear, **block) for _ in range(depth)])
  return attn, ffn, drop_rngs


def run_blocks(blocks: Sequence[tuple[nnx.Module, ...]], h, scan: bool):
  """``h`` through every block in order, each block a tuple of modules applied in turn.

  ``scan``: one ``jax.lax.scan`` over the blocks' states stacked along a new leading axis, so
  XLA compiles one block's forward and backward whatever the depth, while the model keeps one
  entry per block (checkpoints, optimizer paths and multipliers, shardings and sparsity masks do
  not change; the optimizer stacks alike tensors for its update, experiments/train/stacking.py).
  The stack is built inside the step (a copy of the block parameters; its gradient is the
  per-block slice). Each block's dropout
  stream advances as it does unrolled (the new counts come out of the scan). A single block,
  and any call under ``nnx.capture`` (coordinate checks: each layer sows its own output), runs
  unrolled. On XLA:CPU the scanned step compiles slower than the unrolled one (depth 2: 2.6 vs
  1.9 s; depth 12: 4.8 vs 4.4 s, benchmarks/results/compile_time_cpu.md) and can run slower, so
  models default to unrolled.
  """
  if not scan or len(blocks) < 2 or hasattr(blocks[0][0], "__captures__"):
    for block in blocks:
      for module in block:
        h = module(h)
    return h
  split = [nnx.split(block) for block in blocks]
  graphdef = split[0][0]
  if any(g != graphdef for g, _ in split):
    raise ValueError("model.scan_layers needs blocks of one structure; these differ "
                     "(set model.scan_layers=False)")
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(state for _, state in split))

  def body(h, state):
    block = nnx.merge(graphdef, state)
    for module in block:
      h = module(h)
    return h, nnx.state(block, nnx.RngState)

  h, rng_states = jax.lax.scan(body, h, stacked)
  for i, block in enumerate(blocks):
    nnx.update(block, jax.tree.map(lambda x: x[i], rng_states))
  return h


def blocks_flops_per_token(attn: nnx.List, ffn: nnx.List, seq_len: int) -> int:
  """Forward FLOPs per token of all blocks (attention scores over ``seq_len`` included)."""
  return sum(a.flops_per_token(seq_len) + f.flops_per_token() for a, f in zip(attn, ffn))
