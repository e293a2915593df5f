"""Shared by the kernel tests: the error measure their stated tolerances refer to."""

import jax.numpy as jnp
import pytest


@pytest.fixture
def assert_close():
  """Asserts max |got - want| / max |want| <= tol (got in any dtype, compared in float32)."""
  def check(got, want, tol):
    err = jnp.abs(got.astype(jnp.float32) - want).max() / jnp.abs(want).max()
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"
  return check
