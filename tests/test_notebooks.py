"""Every notebook follows the conventions, is committed sanitized, and executes cold under papermill.

The local run is also the regression check: each code cell's fresh outputs are compared with the committed ones by
nbval's own comparison (tools/compare_outputs.py, tests/sanitize.cfg), so each notebook executes once per target.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import compare_outputs  # noqa: E402
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
    assert re.search(rf'^t = setup\(TARGET, "{path.stem}"', first_after.source, re.M), \
        "the cell after the parameters builds the target: t = setup(TARGET, \"<chapter id>\")"
    assert len(first_after.source.strip().splitlines()) <= 6, "the set-up cell is at most a few lines"
    assert not re.search(r"^\s*if TARGET ==", text_of(nb, "code"), re.M), \
        "target-dependent cells use %%on local|eks|cluster|aws, not if TARGET == ..."
    assert not re.search(r"print\(\s*f?[\"']skipped", text_of(nb, "code")), \
        "no cell prints that it was skipped: the target says it (%%on ...)"
    prose = text_of(nb, "markdown")
    assert nb.cells[0].source.startswith("# "), "opens with a title"
    for needed in ("What you will build", "Time", "Cost", "Prerequisites", "What just happened", "Cleanup",
                   "Exercises"):
        assert needed.lower() in prose.lower(), f"missing section: {needed}"
    if path != NOTEBOOKS[-1]:
        assert "**Next:**" in prose, "ends with a link to the next notebook"
    assert not re.search(r"helpers\.\w+\._\w", text_of(nb, "code")), "notebooks never call private helpers"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_outputs_are_checked_as_nbval_would(path: Path):
    """The single-run check equals nbval's only where cells neither clear nor update their outputs (nbval ignores
    those messages, papermill applies them) and none is skipped (nbval would not run it; papermill does)."""
    nb = nbformat.read(path, as_version=4)
    assert compare_outputs.frontend_calls(nb) == [], "a cell clears or updates its output (clear_output/display_id)"
    skipped = [i for i, c in enumerate(compare_outputs.code_cells(nb)) if compare_outputs.cell_options(c)["skip"]]
    assert skipped == [], f"code cells {skipped} carry nbval-skip / NBVAL_SKIP: papermill would still run them"


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
def test_notebook_executes_cold_locally_with_the_committed_outputs(path: Path, request: pytest.FixtureRequest):
    """One papermill run per notebook (the book is built from it), checked cell by cell against the committed
    outputs the way `pytest --nbval --nbval-sanitize-with tests/sanitize.cfg` checks them."""
    out = run_notebooks.execute(path, ROOT / "build" / "executed", target="local")
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    differ = compare_outputs.compare(nb, nbformat.read(path, as_version=4), config=request.config)
    assert not differ, (
        f"{len(differ)} cell(s) of {path.name} differ from the committed outputs (nbval's comparison, "
        "tests/sanitize.cfg):\n\n" + "\n\n".join(map(str, differ))
        + "\n\nIf the change is intended: make notebooks && .venv/bin/python tools/sanitize_notebooks.py refresh"
    )


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_eks_target_without_a_cluster_stops_clearly(path: Path, tmp_path: Path, monkeypatch,
                                                             no_aws_credentials, isolated_settings):
    """No credentials, no kubeconfig: the eks path renders and validates, then stops with a clear message.

    The kernel gets its own state folder and ports (isolated_settings): notebook 10 stops "this machine's" stack
    in both targets, and this run must not stop the local stack the local notebooks run on (make test runs both
    targets side by side)."""
    from helpers.local import stack

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    try:
        out = run_notebooks.execute(path, tmp_path, target="eks")
    finally:
        stack.down()  # what this notebook started in its own state folder (07 runs the MCP servers in eks too)
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    banner = "".join(o.get("text", "") for o in code[[i for i, c in enumerate(code)
                                                       if "parameters" in c.metadata.get("tags", [])][0] + 2].outputs)
    assert "target: eks" in banner and "cluster: none (No kubeconfig at" in banner \
        and "AWS account: none (No AWS credentials found" in banner, \
        f"the set-up banner names the missing cluster and credentials, with their reasons:\n{banner}"
    gated = [c for c in code if re.match(r"%%on (cluster|aws)\b", c.source)]
    shown = ["".join(o.get("text", "") for o in c.outputs) for c in gated]
    if gated:
        need = re.match(r"%%on (cluster|aws)", gated[0].source).group(1)
        what = "No cluster" if need == "cluster" else "No AWS account"
        assert shown[0].startswith(f"{what}: ") and "\nFix: " in shown[0], \
            f"the first skipped {need} cell says why and how to fix it, got: {shown[0]!r}"
    for text in shown:  # a gated cell either says why it is skipped or prints nothing: it never half-runs
        assert not text.strip() or text.startswith(("No cluster: ", "No AWS account: ")), f"a skipped cell ran: {text!r}"


# Words a notebook's own output uses when it calls its measurement unreliable (the before-stop hook looks too).
UNRELIABLE = re.compile(r"re-run (this cell )?on a quiet machine|load average [4-9]", re.I)


def test_every_committed_notebook_comes_from_one_run() -> None:
    """One clean sequential run produced every committed output: every notebook carries that run's id."""
    ids = {nb.stem: nbformat.read(nb, as_version=4).metadata.get("workshop", {}).get("run_id") for nb in NOTEBOOKS}
    assert None not in ids.values(), f"notebooks without a run id (execute them with tools/run_notebooks.py): {ids}"
    assert len(set(ids.values())) == 1, f"the committed notebooks come from different runs: {ids}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_committed_output_calls_itself_unreliable(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    shown = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    found = UNRELIABLE.search(shown)
    assert not found, f"a committed output calls its own measurement unreliable: {found.group(0)!r}"
