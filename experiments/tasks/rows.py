"""This host's rows of a global batch: every task feeds only its own rows."""

from __future__ import annotations

import jax

from experiments.errors import DataError


def host_slice(n: int) -> slice:
  """This host's rows of a global batch of ``n`` rows (all of them on one host)."""
  index, count = jax.process_index(), jax.process_count()
  if n % count:
    raise DataError(f"a global batch of {n} rows does not split over {count} hosts; "
                    f"use a multiple of {count}")
  return slice(index * (n // count), (index + 1) * (n // count))


def host_rows(batch: dict) -> dict:
  rows = host_slice(len(next(iter(batch.values()))))
  return {k: v[rows] for k, v in batch.items()}
