"""The notebooks in examples/ run end to end (on a tiny budget), so they cannot rot.

Each notebook's cell tagged ``parameters`` holds its budget; the test runs it with the tiny
values below in its place. The kernel imports this checkout's stridelab (PYTHONPATH).
"""

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "quickstart.ipynb": {"TOTAL_STEPS": 1024, "NUM_ENVS": 32, "EPISODE_LENGTH": 50, "EVAL_EPISODES": 2,
                         "VIDEO_STEPS": 5},
    "trpo_optimizer.ipynb": {"ITERATIONS": 8, "BATCH": 256, "MAX_KL": 0.02},
}


def _with_parameters(book: nbformat.NotebookNode, values: dict) -> nbformat.NotebookNode:
    cells = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    names = {line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line and
             not line.lstrip().startswith("#")}
    assert set(values) <= names, f"not parameters of the notebook: {set(values) - names}"
    cells[0].source = cells[0].source + "\n# test overrides\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    return book


def test_notebooks_are_stored_without_outputs():
    for path in sorted((ROOT / "examples").glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: stored with outputs"


@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs_end_to_end(name, tmp_path, monkeypatch):
    book = _with_parameters(nbformat.read(ROOT / "examples" / name, as_version=4), TINY[name])
    # The kernel is a child process: it inherits the environment, so it imports this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if name == "quickstart.ipynb":
        html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
        assert any("<video" in h and "base64" in h for h in html), "the video is not shown inline"
        assert (tmp_path / "runs" / "quickstart" / "ppo_policy.onnx").is_file()
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure shown"
    print(f"{name}: {time.perf_counter() - started:.0f} s")
