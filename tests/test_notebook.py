"""NOTEBOOK SMOKE TEST: executes notebook/vinted_tagger.ipynb top to bottom on a small synthetic demo set.

Every cell runs (label EDA, image EDA, UMAP, training through ``classify train``, evaluation, inference timing,
``classify predict``); the test fails on the first cell that raises, and on any error output. It never reads
``../shared/data`` or the committed model: the data, label files, scratch folder and model folder all point at
temporary paths through the notebook's environment variables, so it passes on a machine without ``../shared``.
The committed notebook file is not modified (execution happens on an in-memory copy).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
for _module in ("ipykernel", "umap", "plotly", "matplotlib"):
    pytest.importorskip(_module, reason=f"the notebook extra is not installed ({_module} missing)")

from devtools.demo_data import make_demo_dataset  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebook" / "vinted_tagger.ipynb"
TIMEOUT_PER_CELL_S = 300


def test_notebook_executes_on_demo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lite2_encoder) -> None:
    # lite2_encoder: the encoder's ONNX file is exported once into the session's VINTED_TAGGER_HOME, which the
    # kernel inherits, so the notebook does not export it again.
    data = make_demo_dataset(tmp_path / "demo", n_train=150, n_test=50, seed=0)
    work = tmp_path / "work"
    monkeypatch.setenv("VINTED_TAGGER_DATA", str(data))
    monkeypatch.setenv("VINTED_TAGGER_LABELS", str(data))  # label EDA on the demo labels, not ../shared
    monkeypatch.setenv("VINTED_TAGGER_WORK", str(work))
    monkeypatch.setenv("VINTED_TAGGER_MODEL", str(tmp_path / "no-committed-model"))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_PER_CELL_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on the first failing cell

    errors = [(i, out.get("ename"), out.get("evalue")) for i, cell in enumerate(notebook.cells)
              if cell.cell_type == "code" for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"cells with error outputs: {errors}"
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("outputs") for cell in code_cells), "every code cell should show something"

    predictions = pd.read_parquet(work / data.name / "predictions.parquet")
    test_ids = pd.read_parquet(data / "test.parquet")["uuid"].tolist()
    assert predictions["uuid"].tolist() == test_ids
    assert list(predictions.columns) == ["uuid", "category1", "category2", "polka dot", "floral", "checker"]


def test_notebook_text_has_no_internal_labels_and_tells_the_fine_tuning_story() -> None:
    """Static (no kernel): the prose is for a reader outside the team, and section 7 shows the comparison as a
    table, a chart, learning curves and the decision, through devtools.finetune_report (no logic in the cell)."""
    import re

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    labels = [(i, m) for i, cell in enumerate(notebook.cells)
              for m in re.findall(r"(?i)\b(?:issue|ticket) #?\d+", cell.source)]
    assert not labels, f"internal labels in cells: {labels}"
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    for call in ("FT.comparison(", "FT.curves(", "FT.plot(", "FT.decision("):
        assert call in code, call
    writes = [w for w in re.findall(r"classify\(\[.*?\]\) == 0", code, re.S) if '"--out"' in w]
    assert writes and all("--overwrite" in w for w in writes), "a re-run must be allowed to replace its scratch files"
