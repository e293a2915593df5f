"""Pure jitted train and eval steps over NNX modules."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments import sparsity


def mse(pred, y):
  return jnp.mean(jnp.sum(jnp.square(pred.astype(jnp.float32) - y), axis=-1))


def xent(logits, labels):
  """Mean cross-entropy against integer labels [...] or soft targets [..., classes] (mixup,
  label smoothing)."""
  logits = logits.astype(jnp.float32)
  if labels.ndim == logits.ndim:
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


LOSSES = {"mse": mse, "xent": xent, "lm": xent}


def loss_fn(model, batch, loss_name: str):
  return LOSSES[loss_name](model(batch["x"]), batch["y"])


@nnx.jit(static_argnames=("loss_name", "sparsity_plan"))
def train_step(model, optimizer, batch, loss_name: str, sparsity_plan=None):
  """One optimizer step (with the sparsity plan's mask updates, if any); returns the loss and,
  per gradient tensor, whether it is all finite."""
  loss, grads = nnx.value_and_grad(loss_fn)(model, batch, loss_name)
  sparsity.update(model, optimizer, grads, sparsity_plan)
  return loss, jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads)


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
