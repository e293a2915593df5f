"""The choices the structured layers' XLA paths make per backend, in one place.

The layer code is the same on every backend; where a backend runs one form measurably faster
than another and the others do not care (or prefer the plain form), the rule lives here.
"""

import jax
import jax.numpy as jnp

# XLA:CPU, one device: a model whose feed-forward spends few FLOPs per byte its first layer
# writes runs its batch in BATCH_CHUNKS chunks of examples, through the whole network, and a
# language model's head and cross-entropy run over LOSS_CHUNKS chunks of positions. The kernels'
# summed time per step stays about the same (traced); what shrinks is the time XLA:CPU's two
# threads wait on each other, the chunks' kernels being independent until the weight gradients
# meet. Measured, 2 cores (benchmarks/results/batch_chunks_cpu.md, btt_ffn_chunks_cpu.md,
# gpt2_loss_chunks_cpu.md), the CIFAR MLP recipe's step in 4 chunks of 256 examples: BTT w=1024
# (24 FLOPs per byte of its [N, 4096] float32 output) and Kronecker w=1024 (24) ~0.9x, TT (52)
# and BTT w=2048 (40) 0.89-0.93x, BLAST (2.5) even; Monarch b=4 w=512 (80) and dense (128),
# whose GEMMs prefer size, slower. Chunking only BTT's feed-forward pair gave ~0.8x its unchunked
# step, the whole network a further ~0.9x. GPT-2 d 256 (vocab 50304, 8 x 256 tokens): the step
# 0.90-0.97x in 2 or 4 loss chunks. Several devices split the batch between them, and chunks would
# move data; GPUs and TPUs would only get smaller kernels.
BATCH_CHUNKS = {"cpu": 4}
LOSS_CHUNKS = {"cpu": 4}
CHUNK_BELOW_FLOPS_PER_BYTE = 60
MIN_CHUNK_EXAMPLES = 128
# Causal attention in query blocks, each against the keys it sees (models.layers.attention):
# XLA:CPU, fwd+bwd of 4 heads of 64 (benchmarks/results/attention_cpu.md), 8 x 256 positions in 4
# blocks of 64: 0.65x the time whole (blocks of 32: 0.90x, 128: 0.84x); 2 x 1024 in 8 blocks of
# 128: 0.58x (64: 0.71x, 256: 0.64x). Elsewhere unmeasured: one block, the full square.
QUERY_BLOCKS = {"cpu": 8}
MIN_QUERY_BLOCK = 64
# A 2-D weight gradient t^T dy (t [N, K], dy [N, M], contracting the tokens N) whose weight has at
# least this many times more outputs than inputs (M >= ratio K) runs with t transposed first, to
# [K, N], so the dot is a plain product (``structured.base._weight_grad``): XLA:CPU runs the dot
# with a transposed operand outside its GEMM library (in GPT-2's step those were the only untraced,
# Eigen-run dots), and the transpose moves N K numbers for the product's 2 N K M FLOPs. Measured,
# 2 cores (benchmarks/results/weight_grad_forms_cpu.md): GPT-2's head per loss chunk, [512, 256]
# x [512, 50304], 78 -> 67 ms, its step 0.98x in one process (0.98-1.06x, noise, in alternating
# processes); [2048, 256] x [2048, 1024] 8.4 -> 6.2 ms (the MLPs'
# and ViT's steps even); at M <= K the forms trade places between runs, and batched products of
# small cores tie or lose. Elsewhere: the dot as written.
TRANSPOSE_TOKENS_FROM_RATIO = {"cpu": 4}


def batch_chunk(n_examples: int, flops_per_byte: float) -> int:
  """How many of ``n_examples`` a model runs at once (all of them but where the rule above
  chunks), given the FLOPs its feed-forward's first layer spends per byte it writes."""
  chunks = BATCH_CHUNKS.get(jax.default_backend())
  if chunks is None or jax.device_count() > 1 or flops_per_byte >= CHUNK_BELOW_FLOPS_PER_BYTE:
    return n_examples
  return _chunk(n_examples, chunks, MIN_CHUNK_EXAMPLES)


def loss_chunk(n_positions: int) -> int:
  """How many of ``n_positions`` (of every sequence in the batch) a language model's head and
  loss run at once. Cut along the sequence, so a batch sharded over devices stays in place."""
  return _chunk(n_positions, LOSS_CHUNKS.get(jax.default_backend(), 1), 1)


def query_block(n_queries: int) -> int:
  """How many of a causal attention's ``n_queries`` positions one block holds (see
  ``models.layers.attention``)."""
  return _chunk(n_queries, QUERY_BLOCKS.get(jax.default_backend(), 1), MIN_QUERY_BLOCK)


def transpose_tokens_first(k: int, m: int, batched: bool) -> bool:
  """Whether the weight gradient of a [K, M] weight (``batched``: one per leading batch index)
  transposes its tokens-major input first (see TRANSPOSE_TOKENS_FROM_RATIO)."""
  ratio = TRANSPOSE_TOKENS_FROM_RATIO.get(jax.default_backend())
  return ratio is not None and not batched and m >= ratio * k


def _chunk(n: int, chunks: int, least: int) -> int:
  """The size of ``chunks`` near-equal pieces of ``n`` items (fewer if they would hold less than
  ``least``): all but the last that size."""
  return max(-(-n // chunks), min(n, least))


def cast_for_dot(operand: jax.Array, dtype) -> jax.Array:
  """``operand`` in ``dtype``, ready for a dot with float32 accumulation whose result stays in
  the operands' dtype.

  GPUs and TPUs accumulate bfloat16 products in float32 inside the matrix unit and round once on
  output, so a bf16 dot returns bf16. Asking for a float32 result instead made the backward's dots
  mixed (a float32 cotangent against a bf16 operand), which XLA:GPU runs as float32/tf32 GEMMs:
  most of GPT-2's matmul time on an H200 (benchmarks/results/gpu_h200.md). XLA:CPU has no
  bfloat16 x bfloat16 -> float32 dot for every layout ("Unsupported element type for
  DotThunk::Execute"), so on CPU bfloat16 operands are rounded to bfloat16 and then widened to
  float32: the products of bfloat16 numbers are exact in float32, so it is the same bf16-in,
  f32-accumulate contraction, with a float32 result.
  """
  operand = operand.astype(dtype)
  if dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
    return operand.astype(jnp.float32)
  return operand
