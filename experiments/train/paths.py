"""Parameter paths: the one way pytree key paths become the tuple keys that the optimizer's
per-parameter settings, sparsity plans and the guard's tensor names use."""

from __future__ import annotations

import jax

Path = tuple


def path_key(path) -> Path:
  """A pytree key path as plain keys, without NNX's trailing 'value'."""
  keys = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
  return keys[:-1] if keys and keys[-1] == "value" else keys


def by_path(tree) -> dict[Path, jax.Array]:
  """The leaves of ``tree`` by their ``path_key``, in leaf order."""
  return {path_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
