"""Tests run on CPU with 8 fake devices and wandb disabled."""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the session: the xdist workers and every subprocess they
# start (sweeps, clusters, CLIs) inherit it, so a train step compiled once is loaded, not compiled
# again, by the many processes that build the same runs. Set before jax is imported.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ   # False in the workers: inherited
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="strux-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(items):
  # The end-to-end (slow-marked) tests take most of the suite's time: start them first, the rest
  # keeps its order, so that no xdist worker picks up a long test when the other is nearly done.
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
