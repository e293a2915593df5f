"""The entry points' tcmalloc switch: re-executes with tcmalloc preloaded, exactly once, unless
turned off or not installed."""

import os
import subprocess
import sys

import pytest

from experiments import host_allocator


@pytest.fixture
def execs(monkeypatch):
  calls = []
  monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
  monkeypatch.setattr(host_allocator, "library", lambda: "libtcmalloc_minimal.so.4")
  monkeypatch.delenv("STRUX_MALLOC", raising=False)
  monkeypatch.setenv("LD_PRELOAD", "libother.so")
  monkeypatch.delenv(host_allocator.HEAP_LIMIT, raising=False)
  monkeypatch.setattr(host_allocator, "memory_mb", lambda: 1000)
  return calls


def test_reexecutes_the_same_command_with_tcmalloc_preloaded(execs):
  host_allocator.use_tcmalloc()
  [(path, argv, env)] = execs
  assert path == sys.executable and argv == [sys.executable, *sys.orig_argv[1:]]
  assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libother.so"   # others kept
  assert env[host_allocator.HEAP_LIMIT] == "900"   # 90% of the memory the process may use


def test_a_heap_limit_the_user_set_is_kept(execs, monkeypatch):
  monkeypatch.setenv(host_allocator.HEAP_LIMIT, "123")
  host_allocator.use_tcmalloc()
  assert execs[0][2][host_allocator.HEAP_LIMIT] == "123"


@pytest.mark.parametrize("env", [{"STRUX_MALLOC": "system"},
                                 {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}])
def test_no_reexec_when_off_or_already_preloaded(execs, monkeypatch, env):
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  host_allocator.use_tcmalloc()
  assert execs == []


def test_no_reexec_without_the_library(execs, monkeypatch):
  monkeypatch.setattr(host_allocator, "library", lambda: None)
  host_allocator.use_tcmalloc()
  assert execs == []


@pytest.mark.skipif(host_allocator.library() is None, reason="tcmalloc is not installed")
def test_a_command_runs_with_tcmalloc_loaded(tmp_path):
  script = tmp_path / "probe.py"
  script.write_text("from experiments import host_allocator\nhost_allocator.use_tcmalloc()\n"
                    "print('tcmalloc' in open('/proc/self/maps').read(), flush=True)\n")
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "STRUX_MALLOC")}
  env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                       check=True).stdout
  assert out.split() == ["True"]   # printed once: the re-executed process, with the library mapped


@pytest.mark.skipif(host_allocator.library() is None, reason="tcmalloc is not installed")
def test_past_the_heap_limit_an_allocation_fails_instead_of_growing():
  env = dict(os.environ, LD_PRELOAD=host_allocator.library(), **{host_allocator.HEAP_LIMIT: "100"})
  code = "bytearray(300 * 2**20)"   # 300 MiB past a 100 MiB limit
  run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert run.returncode != 0 and "MemoryError" in run.stderr


@pytest.mark.skipif(host_allocator.library() is None, reason="tcmalloc is not installed")
def test_a_command_given_to_the_module_runs_under_tcmalloc_with_its_heap_limit():
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "STRUX_MALLOC", host_allocator.HEAP_LIMIT)}
  code = ("import os; print('tcmalloc' in open('/proc/self/maps').read(), "
          f"os.environ['{host_allocator.HEAP_LIMIT}'])")
  out = subprocess.run([sys.executable, "-m", "experiments.host_allocator", sys.executable, "-c",
                        code], env=env, capture_output=True, text=True, check=True).stdout
  assert out.split() == ["True", str(int(0.9 * host_allocator.memory_mb()))]
