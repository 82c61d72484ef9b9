"""nbval's output check on a notebook papermill already executed, so `make test` runs each notebook once.

`pytest --nbval` executes a notebook in a kernel of its own and compares each code cell's fresh outputs with the
committed ones. Here the fresh outputs are those papermill recorded (tools/run_notebooks.py, the run the book is
built from), and the comparison is nbval's own code, called cell by cell with nbval's settings for `--nbval
--nbval-sanitize-with tests/sanitize.cfg`:

- which cells are checked: nbval's tags and comment markers (`nbval-ignore-output`, `# NBVAL_IGNORE_OUTPUT`,
  `nbval-raises-exception`, `nbval-skip`, ...) read by its own find_metadata_tags / find_comment_markers;
- what is compared: nbval's IPyNbCell.compare_outputs (streams coalesced with its coalesce_streams, `\\r` and
  `\\b` resolved; every output key and MIME type except nbval's skip list, so text/plain, text/html and the
  streams count, while image/png, image/jpeg, metadata, tracebacks and execution counts do not);
- how values are made comparable: nbval's sanitize with the patterns its get_sanitize_patterns reads from
  tests/sanitize.cfg, on both sides;
- an error in a cell fails it unless nbval would expect one; a reference cell that never ran is not compared.

What differs from a separate nbval run is only where the fresh outputs come from: nbval listens to the kernel
itself, papermill (nbclient) records the same messages into the notebook. The two lists are the same for cells that
do not clear or update their outputs (clear_output, update_display_data: nbval ignores those messages, nbclient
applies them); tests/test_notebooks.py checks that no notebook uses them, and tests/test_compare_outputs.py runs
real nbval beside this on changed outputs to show that both fail and pass together.

    .venv/bin/python tools/compare_outputs.py build/executed/04-gateway.ipynb notebooks/04-gateway.ipynb
"""

from __future__ import annotations

import argparse
import copy
import difflib
import re
import sys
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
from nbval.plugin import (
    IPyNbCell,
    coalesce_streams,
    find_comment_markers,
    find_metadata_tags,
    get_sanitize_patterns,
    nocolors,
)

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "tests" / "sanitize.cfg"
INJECTED = "injected-parameters"  # papermill's cell with the parameters it was given
# nbval's IPyNbFile.__init__ sets this for --nbval without --nbdime (tests/test_compare_outputs.py pins it to nbval's
# source, so an nbval upgrade that changes it fails a test instead of silently comparing something else).
SKIP_COMPARE = ("metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg")


@dataclass(frozen=True)
class Mismatch:
    """One code cell that nbval would fail: its number among the code cells (nbval's `Cell N`) and why."""

    cell: int
    source: str
    message: str

    def __str__(self) -> str:
        head = "\n".join(self.source.splitlines()[:3])
        return f"Cell {self.cell}: {self.message}\nInput:\n{head}"


class _DifflibHook:
    """Stands in for pytest's assertion-repr hook outside pytest: a unified diff of the two values."""

    @staticmethod
    def pytest_assertrepr_compare(config: Any, op: str, left: Any, right: Any) -> list[list[str]]:
        a, b = (str(v).splitlines() for v in (left, right))
        return [["reference_output == test_output", *difflib.unified_diff(a, b, "committed", "executed", lineterm="")]]


class NbvalCell:
    """Just what nbval's IPyNbCell comparison methods read from `self`, with nbval's own methods."""

    compare_outputs = IPyNbCell.compare_outputs
    format_output_compare = IPyNbCell.format_output_compare
    sanitize = IPyNbCell.sanitize

    def __init__(self, patterns: OrderedDict[str, str], config: Any = None) -> None:
        self.parent = SimpleNamespace(skip_compare=SKIP_COMPARE, sanitize_patterns=patterns)
        self.colors = nocolors
        self.config = config
        self.ihook = config.hook if config is not None else _DifflibHook()
        self.comparison_traceback: list[str] = []


def sanitize_patterns(path: Path = SANITIZE) -> OrderedDict[str, str]:
    """The regex -> replacement pairs of a sanitize file, read as nbval reads them."""
    patterns: OrderedDict[str, str] = OrderedDict()
    patterns.update(get_sanitize_patterns(path.read_text()))
    return patterns


def cell_options(cell: nbformat.NotebookNode) -> defaultdict[str, Any]:
    """nbval's options for one code cell under --nbval: tags, then comment markers (which win), check by default."""
    options: defaultdict[str, Any] = defaultdict(bool, find_metadata_tags(cell.metadata))
    options.update(dict(find_comment_markers(cell.source)))
    options.setdefault("check", True)
    return options


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The code cells nbval collects, less papermill's injected parameters cell."""
    return [c for c in nb.cells if c.cell_type == "code" and INJECTED not in c.get("metadata", {}).get("tags", [])]


def compare_cell(index: int, fresh: nbformat.NotebookNode, ref: nbformat.NotebookNode, checker: NbvalCell
                 ) -> Mismatch | None:
    """nbval's verdict on one cell: None when it passes."""
    options = cell_options(ref)
    if options["skip"]:
        return None
    errors = [o for o in fresh.outputs if o.get("output_type") == "error"]
    if errors and not options["check_exception"]:
        err = errors[0]
        return Mismatch(index, ref.source, f"Cell execution caused an exception: {err.get('ename')}: "
                                           f"{err.get('evalue')}")
    unrun = ref.execution_count is None
    if unrun and ref.outputs:
        return Mismatch(index, ref.source, "Unrun reference cell has outputs")
    if not options["check"] or unrun:
        return None
    test = coalesce_streams(copy.deepcopy(list(fresh.outputs)))
    reference = coalesce_streams(copy.deepcopy(list(ref.outputs)))
    checker.comparison_traceback = []
    if checker.compare_outputs(test, reference):
        return None
    return Mismatch(index, ref.source, "Cell outputs differ\n" + "\n".join(checker.comparison_traceback))


def compare(executed: nbformat.NotebookNode, committed: nbformat.NotebookNode, sanitize: Path = SANITIZE,
            config: Any = None) -> list[Mismatch]:
    """Every code cell of `executed` (a papermill run of `committed`) that nbval would fail against `committed`."""
    fresh, refs = code_cells(executed), code_cells(committed)
    if [c.source for c in fresh] != [c.source for c in refs]:
        raise ValueError("the executed notebook is not a run of the committed one (its code cells differ)")
    checker = NbvalCell(sanitize_patterns(sanitize), config)
    found = [compare_cell(i, f, r, checker) for i, (f, r) in enumerate(zip(fresh, refs))]
    return [m for m in found if m]


def compare_files(executed: Path, committed: Path, sanitize: Path = SANITIZE, config: Any = None) -> list[Mismatch]:
    """compare() on two notebook files."""
    return compare(nbformat.read(executed, as_version=4), nbformat.read(committed, as_version=4), sanitize, config)


FRONTEND_CALL = re.compile(r"\b(clear_output|update_display|display_id\s*=)")


def frontend_calls(nb: nbformat.NotebookNode) -> list[int]:
    """Code cells (nbval numbering) that clear or update their outputs, where nbval and nbclient would differ."""
    return [i for i, c in enumerate(code_cells(nb)) if FRONTEND_CALL.search(c.source)]


def main(argv: list[str] | None = None) -> int:
    """Command line: EXECUTED COMMITTED [--sanitize FILE]; exit 1 when a cell differs."""
    parser = argparse.ArgumentParser(prog="python tools/compare_outputs.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("executed", type=Path)
    parser.add_argument("committed", type=Path)
    parser.add_argument("--sanitize", type=Path, default=SANITIZE)
    args = parser.parse_args(argv)
    mismatches = compare_files(args.executed, args.committed, args.sanitize)
    for m in mismatches:
        print(f"{args.committed.name}: {m}\n")
    print(f"{args.committed.name}: {len(mismatches)} cell(s) differ" if mismatches else f"{args.committed.name}: ok")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
