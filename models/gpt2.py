"""GPT-2: learned positions, pre-LN blocks with separate q/k/v, causal attention, LN, head.

Options: QK-LayerNorm, weight tying (head = embedding^T), biases, nanoGPT-style dropout
(embedding and every residual branch output), a compute dtype (params stay float32; logits
come back float32, rounded to the compute dtype first, tied or untied), a depth-muP
``branch_scale`` and ``scan_layers`` (the blocks stored stacked and run as one scan,
models/stack.py). Attention logits are scaled by
``logit_scale`` (muP: 1/d_head; standard: 1/sqrt(d_head)). Every projection comes from the
linear factory, so attention, FFN and head can each be structured.
"""

import jax.numpy as jnp
from flax import nnx

from models import stack
from models.layers import (LinearFactory, blocks_flops_per_token, branch_dropout, split_params,
                           transformer_blocks)
from structured import base

LAYER_TYPES = ("attn", "ffn", "head")


class GPT2(nnx.Module):
  def __init__(self, vocab: int, seq_len: int, width: int, depth: int, heads: int,
               linear: LinearFactory, *, expansion: int = 4, qk_norm: bool = True,
               tie_embeddings: bool = False, logit_scale: float, rngs: nnx.Rngs,
               branch_scale: float = 1.0, dropout: float = 0.0, dtype=jnp.float32,
               scan_layers: bool = False, remat: str = "none"):
    self.seq_len, self.tie_embeddings, self.dtype = seq_len, tie_embeddings, dtype
    self.remat = remat
    init = nnx.initializers.normal(1.0)
    self.wte = nnx.Embed(vocab, width, embedding_init=init, rngs=rngs)
    self.wpe = nnx.Embed(seq_len, width, embedding_init=init, rngs=rngs)
    self.attn, self.ffn, drop_rngs = transformer_blocks(
        width, depth, heads, expansion, linear, is_causal=True, qk_norm=qk_norm,
        logit_scale=logit_scale, rngs=rngs, branch_scale=branch_scale, dropout=dropout, dtype=dtype,
        scan_layers=scan_layers)
    self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.head = None if tie_embeddings else linear("head", "readout", width, vocab)
    self.drop = branch_dropout(dropout, drop_rngs)

  def __call__(self, tokens_BxL):
    return self.logits(self.features(tokens_BxL))

  def features(self, tokens_BxL):
    """The final normed hidden states [B, L, d] the head reads."""
    h = self.wte(tokens_BxL) + self.wpe(jnp.arange(tokens_BxL.shape[1]))[None]
    h = self.drop(h.astype(self.dtype))
    return self.norm(stack.run((self.attn, self.ffn), h, self.remat))

  def logits(self, h):
    """The head: float32 logits [..., vocab] of hidden states [..., d]."""
    if self.head is None:
      return base.einsum("...d,vd->...v", h, self.wte.embedding[...]).astype(jnp.float32)
    return self.head(h).astype(jnp.float32)

  def logit_blocks(self, h):
    """The head's float32 logits of hidden states [..., d] as [A, N, vocab / A], in the layout
    the head leaves them (``StructuredLinear.output_blocks``), for ``step.xent_blocks``."""
    if self.head is None:
      return self.logits(h).reshape(1, -1, self.wte.num_embeddings)
    return self.head.output_blocks(h).astype(jnp.float32)

  def layer_tokens(self, layer) -> int:
    """Tokens per example a linear layer of this model sees: every position of the sequence."""
    return self.seq_len

  def flops_per_example(self, count_lookup: bool = True) -> int:
    """Forward FLOPs of one sequence as Chinchilla counts them (Hoffmann et al. 2022, App. F):
    the token embedding as a one-hot matmul (2 V D a token; ``count_lookup=False`` leaves it
    out, giving what XLA executes, a lookup), every block incl. attention scores and softmax,
    and the head; norms, GELU and the position embedding are left out."""
    vocab, width = self.wte.embedding.shape
    head = 2 * width * vocab if self.head is None else self.head.flops_per_token()
    embedding = 2 * vocab * width if count_lookup else 0
    per_token = embedding + head + blocks_flops_per_token(self.attn, self.ffn, self.seq_len)
    return self.seq_len * per_token

  def param_counts(self) -> dict[str, int]:
    """Total, embedding (token and position tables) and non-embedding parameters."""
    return split_params(self, int(self.wte.embedding.size + self.wpe.embedding.size))
