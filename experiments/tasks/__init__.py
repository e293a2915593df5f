"""Data sources. Each task gives ``spec`` (what the model needs: d_in/d_out, vocab/seq_len or
image_shape/d_out), the loss name, ``tokens_per_example``, ``train_batch(step)`` and
``eval_batches()`` (the ``Task`` protocol). ``build.make`` picks one by ``data.name``. Batches are pure functions of the seed and the step, so a resumed run sees
exactly the data it would have seen; each host gets only its own rows of the global batch
(``jax.process_index()`` of ``jax.process_count()``).

Tasks: ``teacher`` (synthetic), ``bytes`` (text files, text.py), ``tokens``
(nanoGPT .bin files, tokens.py), and image classification (images.py)
on ``fashion_mnist`` (Debian IDX files, offline) or the tfds datasets ``cifar10``,
``cifar100``, ``imagenet2012`` (tfds_data.py).
"""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
  """What the training loop needs of a data task."""

  spec: dict             # what the model needs: d_in/d_out, vocab/seq_len or image_shape/d_out
  loss: str              # a key of experiments.train.step.LOSSES
  tokens_per_example: int

  def train_batch(self, step: int) -> dict: ...

  def eval_batches(self) -> list[dict]: ...
