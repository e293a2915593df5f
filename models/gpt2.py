"""GPT-2: learned positions, pre-LN blocks with separate q/k/v, causal attention, LN, head.

Options: QK-LayerNorm, weight tying (head = embedding^T), biases. Attention logits are scaled
by ``logit_scale`` (muP: 1/d_head; standard: 1/sqrt(d_head)). Every projection comes from the
linear factory, so attention, FFN and head can each be structured. Dropout is not implemented.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import FeedForward, LinearFactory


class Attention(nnx.Module):
  def __init__(self, width: int, heads: int, linear: LinearFactory, *, qk_norm: bool,
               logit_scale: float, rngs: nnx.Rngs, branch_scale: float = 1.0):
    if width % heads:
      raise ValueError(f"width {width} is not divisible by heads {heads}")
    self.heads, self.logit_scale, self.branch_scale = heads, logit_scale, branch_scale
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.q, self.k, self.v = (linear("attn", "hidden", width, width) for _ in range(3))
    self.o = linear("attn", "residual_out", width, width)
    d_head = width // heads
    self.q_norm = nnx.LayerNorm(d_head, rngs=rngs) if qk_norm else None
    self.k_norm = nnx.LayerNorm(d_head, rngs=rngs) if qk_norm else None

  def __call__(self, h_BxLxD):
    b, l, d = h_BxLxD.shape
    x = self.norm(h_BxLxD)
    q, k, v = (p(x).reshape(b, l, self.heads, d // self.heads) for p in (self.q, self.k, self.v))
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    out_BxLxHxK = jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=self.logit_scale)
    return h_BxLxD + self.branch_scale * self.o(out_BxLxHxK.reshape(b, l, d))

  def flops_per_token(self, seq_len: int) -> int:
    """Projections plus scores (q k^T) and the weighted sum (A v), over the full L x L square
    that XLA's attention computes (the causal mask does not skip work)."""
    proj = sum(p.flops_per_token() for p in (self.q, self.k, self.v, self.o))
    return proj + 2 * 2 * seq_len * self.q.d_out


class GPT2(nnx.Module):
  def __init__(self, vocab: int, seq_len: int, width: int, depth: int, heads: int,
               linear: LinearFactory, *, expansion: int = 4, qk_norm: bool = True,
               tie_embeddings: bool = False, logit_scale: float, rngs: nnx.Rngs,
               branch_scale: float = 1.0):
    self.seq_len, self.tie_embeddings = seq_len, tie_embeddings
    init = nnx.initializers.normal(1.0)
    self.wte = nnx.Embed(vocab, width, embedding_init=init, rngs=rngs)
    self.wpe = nnx.Embed(seq_len, width, embedding_init=init, rngs=rngs)
    self.attn = nnx.List([Attention(width, heads, linear, qk_norm=qk_norm, logit_scale=logit_scale,
                                    rngs=rngs, branch_scale=branch_scale) for _ in range(depth)])
    self.ffn = nnx.List([FeedForward(width, expansion, linear, rngs, branch_scale)
                         for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.head = None if tie_embeddings else linear("head", "readout", width, vocab)

  def __call__(self, tokens_BxL):
    h = self.wte(tokens_BxL) + self.wpe(jnp.arange(tokens_BxL.shape[1]))[None]
    for attn, ffn in zip(self.attn, self.ffn):
      h = ffn(attn(h))
    h = self.norm(h)
    if self.head is None:
      return jnp.einsum("bld,vd->blv", h, self.wte.embedding[...], preferred_element_type=jnp.float32)
    return self.head(h)

  def flops_per_example(self) -> int:
    """Forward FLOPs of one sequence: every matmul incl. attention scores and the head
    (Chinchilla-style; embedding lookups, norms and softmax are left out)."""
    vocab, width = self.wte.embedding.shape
    head = 2 * width * vocab if self.head is None else self.head.flops_per_token()
    per_token = head + sum(a.flops_per_token(self.seq_len) + f.flops_per_token()
                           for a, f in zip(self.attn, self.ffn))
    return self.seq_len * per_token

  def param_counts(self) -> dict[str, int]:
    total = sum(int(p.size) for p in jax.tree.leaves(nnx.state(self, nnx.Param)))
    embedding = int(self.wte.embedding.size + self.wpe.embedding.size)
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
