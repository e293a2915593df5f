"""Where a traced training step spends its device time: a table read from a ``jax.profiler`` trace.

  python -m benchmarks.profile_summary WORKDIR/profile [--top 15]

Reads the newest ``*.xplane.pb`` under the folder (written by ``profile_steps``), and for each
device plane (a GPU or TPU; else the host, where XLA:CPU's thread pools run the HLO instructions
beside Python frames and thunk waits, which are left out) prints: the traced span, the time some
kernel was running (busy) and the rest (idle: host syncs, launch gaps, input waits), and the
kernels with the most total time, each with its share of busy time and a category (matmul,
matmul f32, attention, collective, copy, other fusion) read off its name.
"""

import argparse
import collections
import pathlib
import re

from jax import profiler

# first match wins; names as cuBLAS/cuDNN/XLA:GPU, XLA:TPU and XLA:CPU print them (XLA:CPU's
# YNNPACK/XNNPACK/oneDNN fusions are mostly dots)
CATEGORIES = (
    ("attention", ("fmha", "flash", "attention", "softmax")),
    ("matmul", ("gemm", "cublas", "cutlass", "xmma", "convolution", "dot", "matmul", "wgmma",
                "ynn_fusion", "xnn_fusion", "onednn")),
    ("collective", ("all-reduce", "all_reduce", "allreduce", "all-gather", "reduce-scatter",
                    "nccl")),
    ("copy", ("memcpy", "memset", "copy", "transpose")),
)


def category(kernel: str) -> str:
  lower = kernel.lower()
  found = next((c for c, keys in CATEGORIES if any(k in lower for k in keys)), "other fusion")
  if found == "matmul" and "f32f32" in lower:   # cuBLAS names its operand types: f32 x f32 GEMMs
    return "matmul f32"                         # where bf16 was meant are worth seeing apart
  return found


HLO_NAME = re.compile(r"[a-z][a-z0-9_-]*(\.\d+)?")   # e.g. ynn_fusion.27, dot_general.82


def kernel_events(plane):
  """A plane's kernel executions: on a device, the events of its GPU streams or TPU op lines (not
  the summary lines: XLA Modules, Steps, ...); on the host (XLA:CPU), the events of its thread
  pools named as HLO instructions (not the Python frames, thunk-executor waits and dispatch spans
  that share those lines)."""
  lines = list(plane.lines)
  device = ([l for l in lines if l.name.startswith("Stream")]
            or [l for l in lines if l.name in ("XLA Ops", "TensorFlow Ops")])
  if device:
    return [event for line in device for event in line.events]
  host = [l for l in lines if l.name.startswith("tf_XLA")] or lines
  return [event for line in host for event in line.events if HLO_NAME.fullmatch(event.name)]


def summarize(plane, top: int) -> str:
  totals, intervals = collections.Counter(), []
  for event in kernel_events(plane):
    totals[event.name] += event.duration_ns
    intervals.append((event.start_ns, event.end_ns))
  if not intervals:
    return f"## {plane.name}\n\nno events\n"
  intervals.sort()
  busy, (cur_start, cur_end) = 0.0, intervals[0]
  for start, end in intervals[1:]:   # union of the kernels' intervals over all streams
    if start > cur_end:
      busy, cur_start = busy + cur_end - cur_start, start
    cur_end = max(cur_end, end)
  busy += cur_end - cur_start
  span = max(end for _, end in intervals) - intervals[0][0]
  kernel_ns = sum(totals.values())
  by_category = collections.Counter()
  for name, ns in totals.items():
    by_category[category(name)] += ns
  out = [f"## {plane.name}\n",
         (f"traced span {span / 1e6:.1f} ms; some kernel running {busy / 1e6:.1f} ms "
         f"({busy / span:.0%}), idle {(span - busy) / 1e6:.1f} ms ({1 - busy / span:.0%})\n"),
         "| category | ms | share of kernel time |", "|---|---|---|"]
  out += [f"| {c} | {ns / 1e6:.1f} | {ns / kernel_ns:.0%} |" for c, ns in by_category.most_common()]
  out += ["", "| kernel | category | calls-summed ms | share |", "|---|---|---|---|"]
  out += [f"| `{name[:90]}` | {category(name)} | {ns / 1e6:.2f} | {ns / kernel_ns:.1%} |"
          for name, ns in totals.most_common(top)]
  return "\n".join(out) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("folder", type=pathlib.Path, help="a run's profile folder (or any parent)")
  parser.add_argument("--top", type=int, default=15, help="kernels listed per device")
  args = parser.parse_args()
  traces = sorted(args.folder.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
  if not traces:
    raise SystemExit(f"no *.xplane.pb under {args.folder}: was the run started with profile_steps?")
  data = profiler.ProfileData.from_file(str(traces[-1]))
  planes = [p for p in data.planes if p.name.startswith("/device:")]
  planes = planes or [p for p in data.planes if p.name.startswith("/host:CPU")]
  print(f"# Device time of {traces[-1]}\n")
  for plane in planes:
    print(summarize(plane, args.top))


if __name__ == "__main__":
  main()
