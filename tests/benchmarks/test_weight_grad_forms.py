"""benchmarks/weight_grad_forms.py: its three forms compute the same gradient, and it runs."""

import jax
import numpy as np
import pytest

from benchmarks import weight_grad_forms


@pytest.mark.parametrize("batched", [False, True])
def test_every_form_is_t_transposed_times_dy(batched):
  lead = (3,) if batched else ()
  t = jax.random.normal(jax.random.key(0), (*lead, 40, 8))
  dy = jax.random.normal(jax.random.key(1), (*lead, 40, 24))
  want = np.einsum("...nk,...nm->...km", t, dy)
  for name, fn in weight_grad_forms.forms(batched).items():
    np.testing.assert_allclose(fn(t, dy), want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_tiny_run_writes_one_line_per_shape(tmp_path):
  out = tmp_path / "forms"
  text = weight_grad_forms.main(["--repeats", "1", "--shapes", "1x512x64x256", "2x512x64x32",
                                 "--out", str(out)])
  rows = [line for line in text.splitlines() if line.startswith(("| 1x512", "| 2x512"))]
  assert len(rows) == 2 and all(line.count("|") == 7 for line in rows)
  rates = [float(line.split("|")[-2]) for line in rows]   # GFLOP/s from each row's own shape
  assert rates[0] > 0 and rates[1] > 0
  assert (tmp_path / "forms.md").read_text() == text
