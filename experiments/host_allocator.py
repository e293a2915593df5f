"""tcmalloc for the host: XLA:CPU's step buffers reused instead of page-faulted in every step.

XLA:CPU allocates a step's intermediate buffers with the process's malloc at every execution, and
glibc serves large ones with fresh mmap'd pages, so each step pays a page fault per 4 KiB of its
activations again: an elementwise pass over 412 MB took 126 ms, 26 ms with tcmalloc, which keeps
freed memory for reuse (JAX's TPU VMs preload it; vLLM's CPU path too). Train steps on the 2-core
CPU: GPT-2 (d 256) 1.74 -> 1.20 s, the CIFAR MLP recipe's BTT row 242 -> 159 ms
(benchmarks/results/host_allocator_cpu.md). Accelerators keep their buffers in device memory; there
it only changes host-side allocations.

The command-line entry points call ``use_tcmalloc()`` before anything else: it re-executes the
process with tcmalloc in ``LD_PRELOAD`` when the library is installed (Debian/Ubuntu package
libtcmalloc-minimal4, which the Makefile installs) and not yet preloaded; child processes (a
sweep's runs) inherit it. ``STRUX_MALLOC=system`` keeps the system allocator; without the library
nothing changes. The cost: freed memory stays with the process, so one that runs differently
sized programs in turn can hold more than the system malloc would; so the heap is limited to 90%
of the memory the process may use (``TCMALLOC_HEAP_LIMIT_MB``, unless set): near it tcmalloc
hands cached memory back (a process that needs more fails with an allocation error rather than
being killed), and ``release_free_memory`` hands it back on request.
``python -m experiments.host_allocator`` prints the library ('' if none); followed by a command, it
runs that command under tcmalloc (the Makefile's tests).
"""

from __future__ import annotations

import ctypes.util
import os
import sys

LIBRARY = "tcmalloc_minimal"
OFF = "system"   # STRUX_MALLOC=system: keep the system allocator
HEAP_LIMIT = "TCMALLOC_HEAP_LIMIT_MB"
HEAP_FRACTION = 0.9   # of the memory this process may use


def memory_mb() -> int | None:
  """MiB of memory this process may use: the machine's, or its cgroup's limit if lower."""
  limits = []
  try:
    with open("/proc/meminfo") as f:
      limits += [int(line.split()[1]) // 1024 for line in f if line.startswith("MemTotal:")]
  except OSError:
    pass
  for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(path) as f:
        limits.append(int(f.read().strip()) // 2**20)
    except (OSError, ValueError):   # absent, or 'max' (no limit)
      pass
  return min(limits) if limits else None


def library() -> str | None:
  """The installed tcmalloc's file name, for ``LD_PRELOAD``; None if it is not installed."""
  return ctypes.util.find_library(LIBRARY) if sys.platform.startswith("linux") else None


def preloaded() -> bool:
  return LIBRARY in os.environ.get("LD_PRELOAD", "")


def tcmalloc_env() -> dict[str, str] | None:
  """This process's environment with tcmalloc preloaded and its heap limit set (a limit the user
  set is kept); None where it is preloaded already, ``STRUX_MALLOC`` is 'system' or the library
  is not installed."""
  if os.environ.get("STRUX_MALLOC") == OFF or preloaded():
    return None
  lib = library()
  if lib is None:
    return None
  env = dict(os.environ, LD_PRELOAD=" ".join(filter(None, [lib, os.environ.get("LD_PRELOAD")])))
  limit = memory_mb()
  if limit:   # near it, tcmalloc hands cached memory back instead of the process being killed
    env.setdefault(HEAP_LIMIT, str(int(HEAP_FRACTION * limit)))
  return env


def use_tcmalloc() -> None:
  """Re-executes this command under ``tcmalloc_env()`` (nothing to do where that is None). Call
  first thing in a ``__main__`` block only (it replaces the process)."""
  env = tcmalloc_env()
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def release_free_memory() -> None:
  """Hands tcmalloc's cached free memory back to the system (nothing without tcmalloc). tcmalloc
  keeps freed memory for reuse, which a training loop's same-sized steps want; a process that
  moves on to differently sized work (the benchmark's next table) calls this in between."""
  release = getattr(ctypes.CDLL(None), "MallocExtension_ReleaseFreeMemory", None)
  if release is not None:
    release()


if __name__ == "__main__":
  if len(sys.argv) > 1:   # python -m experiments.host_allocator CMD ...: CMD under tcmalloc
    os.execvpe(sys.argv[1], sys.argv[1:], tcmalloc_env() or os.environ)
  print(library() or "")
