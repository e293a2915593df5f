"""Pure jitted train and eval steps over NNX modules."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments import sparsity
from experiments.train.guard import Guard
from structured import backend, masked


def mse(pred, y):
  return jnp.mean(jnp.sum(jnp.square(pred.astype(jnp.float32) - y), axis=-1))


def xent(logits, labels):
  """Mean cross-entropy against integer labels [...] or soft targets [..., classes] (mixup,
  label smoothing)."""
  logits = logits.astype(jnp.float32)
  if labels.ndim == logits.ndim:
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def xent_blocks(logits_AxNxB, labels_N):
  """Mean cross-entropy of logits held as [A, N, B] (class a B + b of token n at [a, n, b]: a
  layer's ``output_blocks``) against integer labels [N]; ``xent`` of the [N, A B] logits without
  forming them: the log-sum-exp reduces over both class axes in place, a size-1 one dropped first
  (XLA:CPU's forward reduced [50304, 512, 1] over axes (0, 2) 25x slower than [50304, 512] over
  0: 369 vs 14 ms)."""
  logits_AxNxB = logits_AxNxB.astype(jnp.float32)
  a, n, b = logits_AxNxB.shape
  picked_N = logits_AxNxB[labels_N // b, jnp.arange(n), labels_N % b]
  if b == 1:
    lse_N = jax.nn.logsumexp(logits_AxNxB.reshape(a, n), axis=0)
  elif a == 1:
    lse_N = jax.nn.logsumexp(logits_AxNxB.reshape(n, b), axis=1)
  else:
    lse_N = jax.nn.logsumexp(logits_AxNxB, axis=(0, 2))
  return jnp.mean(lse_N - picked_N)


LOSSES = {"mse": mse, "xent": xent, "lm": xent}


def loss_fn(model, batch, loss_name: str):
  if loss_name == "lm":
    return lm_xent(model, batch["x"], batch["y"])
  return LOSSES[loss_name](model(batch["x"]), batch["y"])


def lm_xent(model, tokens_BxL, targets_BxL):
  """Mean next-token cross-entropy of a language model (``features`` and ``logits``: GPT-2),
  its head and loss run over chunks of positions where the backend is faster so
  (``backend.loss_chunk``), each on the logits in the layout the head leaves them
  (``logit_blocks``, ``xent_blocks``); the same value as ``xent(model(tokens), targets)``."""
  h_BxLxD = model.features(tokens_BxL)
  n_pos = targets_BxL.shape[1]
  size = backend.loss_chunk(n_pos)
  return sum(xent_blocks(model.logit_blocks(h_BxLxD[:, i:i + size]),
                         targets_BxL[:, i:i + size].reshape(-1))
             * min(size, n_pos - i) for i in range(0, n_pos, size)) / n_pos


_STATIC = ("loss_name", "microbatches", "sparsity_plan")


@nnx.jit(static_argnames=_STATIC)
def train_step(model, optimizer, batch, loss_name: str, microbatches: int = 1, sparsity_plan=None):
  """One optimizer step on the whole batch, its gradient accumulated over ``microbatches``
  pieces when > 1, with the sparsity plan's mask updates (if any); returns the loss. Training
  runs ``guarded_train_step``, which also tracks non-finite steps (``guard.Guard``)."""
  return _update(model, optimizer, batch, loss_name, microbatches, sparsity_plan)[0]


@nnx.jit(static_argnames=_STATIC)
def guarded_train_step(model, optimizer, batch, guard: Guard, loss_name: str, microbatches: int = 1,
                       sparsity_plan=None):
  """``train_step`` that folds its loss and gradients into the on-device ``guard`` (the first
  non-finite step and tensor), so nothing needs the host; returns the loss and the new guard."""
  step = optimizer.step[...].astype(jnp.int32) + 1   # the step being taken, 1-based
  loss, grads = _update(model, optimizer, batch, loss_name, microbatches, sparsity_plan)
  return loss, guard.update(step, loss, grads)


def _update(model, optimizer, batch, loss_name: str, microbatches: int, sparsity_plan):
  """The step's loss and gradients, the optimizer (and masks) updated in place."""
  def value_and_grad(model, wrt=nnx.Param):
    if microbatches == 1:
      return nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model, batch, loss_name)
    return _accumulated_value_and_grad(model, batch, loss_name, microbatches, wrt)

  loss, grads = value_and_grad(model)
  sparsity.update(model, optimizer, grads, sparsity_plan,
                  lambda model: value_and_grad(model, masked.GradProbe)[1])
  return loss, grads


def _accumulated_value_and_grad(model, batch, loss_name: str, microbatches: int, wrt=nnx.Param):
  """Mean loss and gradient (w.r.t. the ``wrt`` variables) over equal microbatches, scanned so
  one piece is live at a time.

  Microbatch j takes rows j, j + m, j + 2m, ... (a reshape to [B/m, m, ...]): each device's
  contiguous rows split evenly, so every piece stays spread over all data-parallel devices.
  """
  pieces = jax.tree.map(lambda v: jnp.swapaxes(v.reshape(-1, microbatches, *v.shape[1:]), 0, 1),
                        batch)

  @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
  def accumulate(carry, piece):
    model, grad_sum = carry
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model, piece,
                                                                            loss_name)
    return (model, jax.tree.map(jnp.add, grad_sum, grads)), loss

  zeros = jax.tree.map(jnp.zeros_like, nnx.state(model, wrt))
  (_, grad_sum), losses = accumulate((model, zeros), pieces)
  return jnp.mean(losses), jax.tree.map(lambda g: g / microbatches, grad_sum)


@nnx.jit(static_argnames="loss_name")
def eval_step(model, batch, loss_name: str) -> dict:
  """Metrics of one eval batch (averaged over batches by the caller)."""
  pred = model(batch["x"])
  loss = LOSSES[loss_name](pred, batch["y"])
  if loss_name == "lm":   # nats per token -> bits per token
    return {"loss": loss, "bits_per_token": loss / jnp.log(2.0)}
  if loss_name == "xent":
    labels = batch["y"] if batch["y"].ndim < pred.ndim else jnp.argmax(batch["y"], -1)
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(pred, -1) == labels)}
  return {"loss": loss}
