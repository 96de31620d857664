"""docs/quickstart.ipynb runs: one attack, a small sweep and compare through the Python
API, at a tiny budget (2 attack steps), in a real Jupyter kernel (nbclient). Its figures
come out inline and the attack's progress shows as a bar in the notebook."""

import os

import pytest
from helpers import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "docs" / "quickstart.ipynb"


@pytest.mark.slow
def test_the_quickstart_notebook_runs_and_shows_its_figures(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = notebook.cells[1]
    assert parameters.source.startswith("ITERATIONS = ")
    parameters.source = parameters.source.replace("ITERATIONS = 30", "ITERATIONS = 2")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # reconstruction, PSNR curve, comparison, curves
    errors = "".join(o.text for o in outputs if o.get("name") == "stderr")
    assert "attack: 100%" in errors and "2/2" in errors  # the progress bar, in the notebook
    assert "Traceback" not in errors
    assert {p.name for p in (tmp_path / "quickstart_runs").iterdir()} >= {
        "noise", "prune_0.2", "prune_0.6", "prune_0.9", "summary.csv", "curves.png"
    }  # fmt: skip
