"""Every notebook follows the conventions, is committed sanitized, and executes cold under papermill."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import run_notebooks  # noqa: E402
import sanitize_notebooks  # noqa: E402

NOTEBOOKS = run_notebooks.notebooks()
IDS = [nb.stem for nb in NOTEBOOKS]


def text_of(nb: nbformat.NotebookNode, kind: str) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == kind)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_conventions(path: Path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert re.search(r'^TARGET = "local"', params[0].source, re.M), "the parameters cell sets TARGET = \"local\""
    code = [c for c in nb.cells if c.cell_type == "code"]
    first_after = code[code.index(params[0]) + 1]
    assert "from helpers import" in first_after.source, "the cell after the parameters imports helpers"
    prose = text_of(nb, "markdown")
    assert nb.cells[0].source.startswith("# "), "opens with a title"
    for needed in ("What you will build", "Time", "Cost", "Prerequisites", "What just happened", "Cleanup",
                   "Exercises"):
        assert needed.lower() in prose.lower(), f"missing section: {needed}"
    if path != NOTEBOOKS[-1]:
        assert "**Next:**" in prose, "ends with a link to the next notebook"
    assert not re.search(r"helpers\.\w+\._\w", text_of(nb, "code")), "notebooks never call private helpers"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_is_executed_and_sanitized(path: Path):
    assert sanitize_notebooks.problems(path) == []
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count for c in code), "commit the notebook with its executed local outputs"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, "committed outputs hold an error"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes_cold_locally(path: Path):
    out = run_notebooks.execute(path, ROOT / "build" / "executed", target="local")
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_eks_target_without_a_cluster_stops_clearly(path: Path, tmp_path: Path, monkeypatch,
                                                             no_aws_credentials):
    """No credentials, no kubeconfig: the eks path renders and validates, then stops with a clear message."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    out = run_notebooks.execute(path, tmp_path, target="eks")
    nb = nbformat.read(out, as_version=4)
    shown = "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) + str(o.get("data", {}).get("text/html", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert re.search(r"no (AWS credentials|cluster)|cannot reach|credentials", shown, re.I), \
        "the eks path says plainly that there is no cluster or no credentials"
