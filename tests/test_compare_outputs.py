"""tools/compare_outputs.py gives nbval's verdict on a papermill run: the same cells fail, the same cells pass.

The unit tests pin the settings it shares with nbval and walk through nbval's rules on hand-made outputs; the
`notebooks` test executes a small notebook once with papermill and runs real `pytest --nbval` on changed copies of
it, cell by cell against tools/compare_outputs.py.
"""

from __future__ import annotations

import copy
import inspect
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import compare_outputs  # noqa: E402
import sanitize_notebooks  # noqa: E402

PNG_A = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PNG_B = PNG_A.replace("mNk", "mPk")


def test_skip_list_is_nbvals():
    """The keys left out of the comparison are those nbval's IPyNbFile sets up for --nbval without --nbdime."""
    from nbval.plugin import IPyNbFile

    source = inspect.getsource(IPyNbFile.__init__)
    live = [line.split("#", 1)[0] for line in source.splitlines()]
    names = set(re.findall(r"'([^']+)'", "\n".join(line for line in live if "skip_compare" in line or
                                                     re.match(r"\s*'[^']+',?\s*$", line))))
    assert names == set(compare_outputs.SKIP_COMPARE)


def test_sanitize_patterns_are_read_as_nbval_reads_them():
    patterns = compare_outputs.sanitize_patterns()
    assert patterns and all(isinstance(k, str) and isinstance(v, str) for k, v in patterns.items())
    assert any("tokens/s" in k for k in patterns), "tests/sanitize.cfg's rate pattern is there"


def stream(text: str, name: str = "stdout") -> nbformat.NotebookNode:
    return new_output("stream", name=name, text=text)


def display(data: dict[str, str], count: int | None = None) -> nbformat.NotebookNode:
    if count is None:
        return new_output("display_data", data=data)
    return new_output("execute_result", data=data, execution_count=count)


def notebook(*cells: tuple[str, list[nbformat.NotebookNode], list[str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    for i, (source, outputs, tags) in enumerate(cells, start=1):
        cell = new_code_cell(source, outputs=outputs, execution_count=i)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def verdict(fresh: list[nbformat.NotebookNode], ref: list[nbformat.NotebookNode], source: str = "x",
            tags: list[str] | None = None) -> bool:
    """True when the cell passes."""
    return not compare_outputs.compare(notebook((source, fresh, tags or [])), notebook((source, ref, tags or [])))


@pytest.mark.parametrize(("fresh", "ref", "source", "tags", "passes"), [
    ([stream("hello\n")], [stream("hello\n")], "x", [], True),
    ([stream("hullo\n")], [stream("hello\n")], "x", [], False),
    ([stream("took 3.2 s\n")], [stream("took 41 ms\n")], "x", [], True),  # sanitize.cfg: durations
    ([stream("12.5 tok/s\n")], [stream("2.2 tok/s\n")], "x", [], True),  # sanitize.cfg: rates
    ([stream("0.123\n")], [stream("0.987\n")], "# NBVAL_IGNORE_OUTPUT\nx", [], True),
    ([stream("0.123\n")], [stream("0.987\n")], "import x\n  # NBVAL_IGNORE_OUTPUT  (why)\nx", [], False),
    ([stream("0.123\n")], [stream("0.987\n")], "import x\n# NBVAL_IGNORE_OUTPUT\nx", [], True),  # any line
    ([stream("0.123\n")], [stream("0.987\n")], "x", ["nbval-ignore-output"], True),
    ([stream("a"), stream("b\n")], [stream("ab\n")], "x", [], True),  # streams coalesced
    ([stream("10%\r100%\n")], [stream("100%\n")], "x", [], True),  # carriage returns resolved
    ([stream("ok\n"), stream("warn\n", "stderr")], [stream("ok\n")], "x", [], False),  # a new stderr line
    ([display({"text/plain": "1"}, 3)], [display({"text/plain": "1"}, 7)], "x", [], True),  # execution count
    ([display({"text/plain": "1"}, 3)], [display({"text/plain": "2"}, 3)], "x", [], False),
    ([display({"text/html": "<b>a</b>", "text/plain": "h"})], [display({"text/html": "<i>a</i>", "text/plain": "h"})],
     "x", [], False),
    ([display({"image/png": PNG_A, "text/plain": "<Figure>"})],
     [display({"image/png": PNG_B, "text/plain": "<Figure>"})], "x", [], True),  # images: not compared (no --nbdime)
    ([display({"image/svg+xml": "<svg/>"})], [display({"image/svg+xml": "<svg></svg>"})], "x", [], False),
    ([new_output("error", ename="E", evalue="v", traceback=[])], [], "x", [], False),
    ([new_output("error", ename="E", evalue="v", traceback=[])], [new_output("error", ename="E", evalue="v",
                                                                             traceback=["t"])],
     "x", ["raises-exception"], True),
])
def test_nbval_rules(fresh, ref, source, tags, passes):
    assert verdict(fresh, ref, source, tags) is passes


def test_papermill_parameters_cell_is_not_a_cell_of_the_committed_notebook():
    committed = notebook(("TARGET = 'local'", [], ["parameters"]), ("print(1)", [stream("1\n")], []))
    executed = copy.deepcopy(committed)
    executed.cells.insert(1, new_code_cell("TARGET = 'local'", metadata={"tags": ["injected-parameters"]}))
    assert compare_outputs.compare(executed, committed) == []
    executed.cells[2].outputs = [stream("2\n")]
    [m] = compare_outputs.compare(executed, committed)
    assert m.cell == 1 and "Cell outputs differ" in m.message and "print(1)" in str(m)


def test_a_run_of_another_notebook_is_refused():
    with pytest.raises(ValueError, match="not a run of the committed one"):
        compare_outputs.compare(notebook(("a", [], [])), notebook(("b", [], [])))


def test_an_unrun_reference_cell_is_not_compared_unless_it_holds_outputs():
    ref = notebook(("x", [], []))
    ref.cells[0].execution_count = None
    assert compare_outputs.compare(notebook(("x", [stream("new\n")], [])), ref) == []
    ref.cells[0].outputs = [stream("old\n")]
    [m] = compare_outputs.compare(notebook(("x", [stream("old\n")], [])), ref)
    assert "Unrun reference cell has outputs" in m.message


# ---------------------------------------------------------------- against real nbval

CELLS = [
    ('TARGET = "local"', ["parameters"]),
    ('print("hello")', []),
    ('import time\nprint(f"took {time.perf_counter() % 10:.1f} s")', []),
    ("# NBVAL_IGNORE_OUTPUT  (random)\nimport random\nprint(random.random())", []),
    ('{"a": 1}', []),
    ('from IPython.display import HTML, display\ndisplay(HTML("<b>bold</b>"))', []),
    ('import sys\nprint("a", end="")\nprint("b", file=sys.stderr)\nprint("c")', []),
    (f'from IPython.display import display\ndisplay({{"image/png": "{PNG_A}", "text/plain": "<img>"}}, raw=True)', []),
    ('print("x\\rprogress 100%")', []),
]


def change_text(cell: nbformat.NotebookNode, old: str, new: str) -> None:
    for out in cell.outputs:
        if "text" in out:
            out["text"] = out["text"].replace(old, new)
        for key, value in out.get("data", {}).items():
            if isinstance(value, str):
                out["data"][key] = value.replace(old, new)


def variants(committed: nbformat.NotebookNode) -> dict[str, tuple[nbformat.NotebookNode, set[int]]]:
    """Changed copies of the committed notebook, each with the code cells nbval must fail."""
    def copy_of() -> tuple[nbformat.NotebookNode, list[nbformat.NotebookNode]]:
        nb = copy.deepcopy(committed)
        return nb, [c for c in nb.cells if c.cell_type == "code"]

    same, _ = copy_of()
    a, ca = copy_of()
    change_text(ca[1], "hello", "hullo")  # fails
    ca[2].outputs[0]["text"] = re.sub(r"\d+\.\d", "99.9", ca[2].outputs[0]["text"])  # a duration: sanitized
    change_text(ca[3], "0.", "1.")  # ignored
    ca[7].outputs[0]["data"]["image/png"] = PNG_B  # images are not compared
    ca[4].execution_count = 42  # execution counts are not compared
    b, cb = copy_of()
    change_text(cb[5], "<b>bold</b>", "<i>bold</i>")  # fails
    cb[6].outputs = [o for o in cb[6].outputs if o.get("name") != "stderr"]  # fails: stderr went missing
    cb[8].outputs = [stream("y\rprogress 100%\n")]  # the same once \r is resolved
    return {"same": (same, set()), "a": (a, {1}), "b": (b, {5, 6})}


def nbval_failures(paths: list[Path], workdir: Path) -> dict[str, set[int]]:
    """Real `pytest --nbval` on the files: per file, the cells that failed."""
    report = workdir / "nbval.xml"
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n")
    subprocess.run([sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(workdir), "--nbval",
                    "--nbval-sanitize-with", str(compare_outputs.SANITIZE), "-p", "no:cacheprovider", "-q",
                    f"--junitxml={report}", *map(str, paths)], cwd=workdir, capture_output=True, text=True)
    failed: dict[str, set[int]] = {p.stem: set() for p in paths}
    seen = 0
    for case in ET.parse(report).iter("testcase"):
        seen += 1
        if case.find("failure") is not None or case.find("error") is not None:
            stem = case.get("classname", "").removesuffix(".ipynb").rsplit(".", 1)[-1]
            failed[stem].add(int(case.get("name", "").split()[-1]))
    assert seen == len(paths) * len(CELLS), "nbval ran every cell of every file"
    return failed


@pytest.mark.notebooks
def test_same_verdicts_as_real_nbval(tmp_path: Path):
    import papermill as pm

    source = tmp_path / "source.ipynb"
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_code_cell(src, metadata={"tags": tags} if tags else {}) for src, tags in CELLS]
    nbformat.write(nb, source)
    executed = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(source), str(executed), parameters={"TARGET": "local"}, kernel_name="python3",
                        progress_bar=False, cwd=str(tmp_path))
    committed = sanitize_notebooks.sanitize(nbformat.read(executed, as_version=4))  # as `refresh` commits it
    cases = variants(committed)
    files = []
    for name, (variant, _) in cases.items():
        files.append(tmp_path / f"variant_{name}.ipynb")
        nbformat.write(variant, files[-1])
    nbval = nbval_failures(files, tmp_path)
    fresh = nbformat.read(executed, as_version=4)
    for name, (variant, expected) in cases.items():
        ours = {m.cell for m in compare_outputs.compare(fresh, variant)}
        assert ours == nbval[f"variant_{name}"] == expected, (name, ours, nbval[f"variant_{name}"], expected)


def test_timestamps_are_masked_when_committed_and_equal_when_compared() -> None:
    fresh = "saved build/evaluation/ragas-20261206T075552Z.json, modified 2026-12-06T07:53:42+00:00"
    committed = sanitize_notebooks.clean_text(fresh, [])
    assert committed == "saved build/evaluation/ragas-<timestamp>.json, modified <timestamp>"
    later = fresh.replace("075552Z", "091500Z").replace("07:53:42", "09:15:00")
    patterns = compare_outputs.sanitize_patterns()

    def masked(text: str) -> str:
        for regex, replacement in patterns.items():
            text = re.sub(regex, replacement, text)
        return text

    assert masked(committed) == masked(later)
