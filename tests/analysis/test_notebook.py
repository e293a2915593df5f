"""analysis/notebooks/scaling_laws.ipynb runs top to bottom on a synthetic sweep with a known answer."""

import os

import nbclient
import nbformat
import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "analysis", "notebooks",
                        "scaling_laws.ipynb")


def test_notebook_runs_on_a_sweep_and_finds_the_multiplier(sweep, monkeypatch):
  monkeypatch.setenv("STRUX_SWEEPS", str(sweep))
  monkeypatch.setenv("STRUX_BOOTSTRAP", "20")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 4   # frontier, residuals, exponents, k
  text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
  assert "'btt': {'k at L*': 4.0" in text.replace("np.float64(", "")   # the sweep's k0
  summary = outputs[-1]["data"]["text/markdown"]
  assert "| btt |" in summary and "| dense |" in summary
