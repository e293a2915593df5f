"""benchmarks/profile_summary.py: busy time is the union of kernel intervals over all streams,
idle the rest of the traced span, kernels grouped by category and ranked by summed time."""

from types import SimpleNamespace as NS

from benchmarks import profile_summary


def _event(name, start_ms, end_ms):
  return NS(name=name, start_ns=start_ms * 1e6, end_ns=end_ms * 1e6,
            duration_ns=(end_ms - start_ms) * 1e6)


def test_busy_is_the_union_over_streams_and_kernels_rank_by_total_time():
  plane = NS(name="/device:GPU:0", lines=[
      NS(name="XLA Modules", events=[_event("jit_train_step", 0, 100)]),   # a summary line: skipped
      NS(name="Stream #1(Compute)", events=[_event("sm90_xmma_gemm_bf16", 0, 40),
                                            _event("fusion_12", 60, 70),
                                            _event("sm90_xmma_gemm_bf16", 80, 90)]),
      NS(name="Stream #2(Copy)", events=[_event("MemcpyD2D", 30, 50)])])   # overlaps the gemm
  text = profile_summary.summarize(plane, top=2)
  # span 0-90 ms; busy = [0, 50] + [60, 70] + [80, 90] = 70 ms
  assert "traced span 90.0 ms; some kernel running 70.0 ms (78%), idle 20.0 ms (22%)" in text
  assert "| matmul | 50.0 | 62% |" in text and "| copy | 20.0 | 25% |" in text
  kernels = [line for line in text.splitlines() if line.startswith("| `")]
  assert [k.split("`")[1] for k in kernels] == ["sm90_xmma_gemm_bf16", "MemcpyD2D"]


def test_categories_follow_the_kernel_names():
  assert profile_summary.category("cudnn_fmha_fwd") == "attention"
  assert profile_summary.category("gemm_fusion_dot_general_12") == "matmul"
  assert profile_summary.category("sm90_xmma_gemm_f32f32_tf32f32_f32_nt_n_tilesize128x128") == \
      "matmul f32"
  assert profile_summary.category("all-reduce.3") == "collective"
  assert profile_summary.category("loop_transpose_fusion_24") == "copy"
  assert profile_summary.category("wrapped_convert_80") == "other fusion"


def test_on_the_host_only_hlo_instructions_count():
  """XLA:CPU: the thread-pool lines also hold Python frames and thunk-executor spans; only events
  named as HLO instructions are kernels, and YNNPACK fusions (XLA:CPU's dots) are matmuls."""
  plane = NS(name="/host:CPU", lines=[
      NS(name="python", events=[_event("$api.py:2479 block_until_ready", 0, 100)]),
      NS(name="tf_XLAEigen/123", events=[_event("ThunkExecutor::Execute", 0, 90),
                                         _event("ynn_fusion.27", 0, 30),
                                         _event("transpose_copy_fusion.2", 30, 40),
                                         _event("$graphlib.py:882 _graph_flatten", 40, 60),
                                         _event("multiply_add_fusion", 60, 65)])])
  text = profile_summary.summarize(plane, top=5)
  assert "traced span 65.0 ms; some kernel running 45.0 ms" in text
  assert "| matmul | 30.0 | 67% |" in text and "| copy | 10.0 | 22% |" in text
  kernels = [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]
  assert kernels == ["ynn_fusion.27", "transpose_copy_fusion.2", "multiply_add_fusion"]
