"""analysis/notebooks/scaling_laws.ipynb runs top to bottom: live on a sweep with a known answer,
and by default on the committed study results."""

import os
import re

import nbclient
import nbformat
import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "analysis", "notebooks",
                        "scaling_laws.ipynb")


def execute(monkeypatch, **env):
  for key in ("STRUX_SWEEPS", "STRUX_BOOTSTRAP"):
    monkeypatch.delenv(key, raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  return outputs


def test_notebook_runs_live_on_a_sweep_and_finds_the_multiplier(sweep, monkeypatch):
  outputs = execute(monkeypatch, STRUX_SWEEPS=str(sweep), STRUX_BOOTSTRAP="20")
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 4   # frontier, residuals, exponents, k
  text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
  k = re.search(r"'btt': \{'k': ([0-9.e+-]+)", text.replace("np.float64(", "")).group(1)
  assert float(k) == pytest.approx(4.0, rel=1e-6)   # the sweep's k0
  summary = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  assert len(summary) == 1 and "| btt |" in summary[0] and "| dense |" in summary[0]


def test_notebook_opens_on_the_committed_studies(monkeypatch):
  outputs = execute(monkeypatch)
  rendered = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  results = os.path.join(os.path.dirname(NOTEBOOK), "..", "..", "benchmarks", "results")
  committed = [name for name in ("scaling_mlp_fashion", "scaling_gpt2_bytes")
               if os.path.exists(os.path.join(results, name, "summary.md"))]
  assert committed, "no committed study results"
  assert len(rendered) == len(committed) and all("| dense |" in text for text in rendered)
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= len(committed)
