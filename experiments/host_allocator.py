"""tcmalloc for the host: XLA:CPU's step buffers reused instead of page-faulted in every step.

XLA:CPU allocates a step's intermediate buffers with the process's malloc at every execution, and
glibc serves large ones with fresh mmap'd pages, so each step pays a page fault per 4 KiB of its
activations again: an elementwise pass over 412 MB took 126 ms, 26 ms with tcmalloc, which keeps
freed memory for reuse (JAX's TPU VMs preload it; vLLM's CPU path too). Train steps on the 2-core
CPU: GPT-2 (d 256) 1.74 -> 1.20 s, the CIFAR MLP recipe's BTT row 242 -> 159 ms
(benchmarks/results/train_step_cpu.md). Accelerators keep their buffers in device memory; there
it only changes host-side allocations.

The command-line entry points call ``use_tcmalloc()`` before anything else: it re-executes the
process with tcmalloc in ``LD_PRELOAD`` when the library is installed (Debian/Ubuntu package
libtcmalloc-minimal4, which the Makefile installs) and not yet preloaded; child processes (a
sweep's runs) inherit it. ``STRUX_MALLOC=system`` keeps the system allocator; without the library
nothing changes. ``python -m experiments.host_allocator`` prints the library ('' if none).
"""

from __future__ import annotations

import ctypes.util
import os
import sys

LIBRARY = "tcmalloc_minimal"
OFF = "system"   # STRUX_MALLOC=system: keep the system allocator


def library() -> str | None:
  """The installed tcmalloc's file name, for ``LD_PRELOAD``; None if it is not installed."""
  return ctypes.util.find_library(LIBRARY) if sys.platform.startswith("linux") else None


def preloaded(env=os.environ) -> bool:
  return LIBRARY in env.get("LD_PRELOAD", "")


def use_tcmalloc() -> None:
  """Re-executes this command with tcmalloc preloaded, unless it already is, ``STRUX_MALLOC`` is
  'system', or the library is not installed. Call first thing in a ``__main__`` block only (it
  replaces the process)."""
  if os.environ.get("STRUX_MALLOC") == OFF or preloaded():
    return
  lib = library()
  if lib is None:
    return
  env = dict(os.environ, LD_PRELOAD=" ".join(filter(None, [lib, os.environ.get("LD_PRELOAD")])))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


if __name__ == "__main__":
  print(library() or "")
