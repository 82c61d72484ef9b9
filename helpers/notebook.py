"""What every notebook shows the same way: tables, highlighted YAML, exercise self-checks, target-gated cells.

The cell magic `%%on NEED` (registered by `workshop.setup`) runs a cell only where it can run:

    %%on local     the laptop stack (skipped on eks)
    %%on eks       offline eks preparation (skipped on local)
    %%on cluster   needs the kubeconfig's cluster (eks, and it answered)
    %%on aws       needs AWS credentials (eks, and they work)

A skipped cell prints why once for a run of consecutive skipped cells (the target's skip message), so a section
of cluster steps says it once, not in every cell.

Exercises: an answer cell (`x = None  # your answer`), a self-check cell calling `self_check(...)`, then a
collapsed solution cell starting with `%%solution` (optionally `%%solution local`). The solution runs in a COPY of
the notebook's namespace, so the learner's answers stay theirs; then the last self-check cell is run again against
the solution's values, and the cell fails unless every check says "correct". Every notebook run therefore proves
that every self-check can be passed.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helpers.target import Target

NEEDS = ("local", "eks", "cluster", "aws")
_MISSING = object()


def table(rows: Iterable[Mapping[str, Any]] | Any, name: str, precision: int | None = None) -> Any:
    """Rows (dicts, or a DataFrame) as a left-aligned table; `name` is a fixed id, so outputs are reproducible."""
    import pandas as pd

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    frame = frame.astype(object).where(frame.notna(), "")  # an absent value shows as blank, never as nan/None
    styles = [{"selector": "th, td", "props": "text-align: left; vertical-align: top;"}]
    styler = frame.style.hide(axis="index").set_uuid(name).set_table_styles(styles)
    return styler.format(precision=precision) if precision is not None else styler.format(plain_number)


def plain_number(value: Any) -> str:
    """A table cell as a reader writes it: 0.57 not 0.570000, 12 not 12.000000; other values as they are."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def code_block(text: str, language: str = "yaml") -> Any:
    """Text shown as a highlighted code block."""
    from IPython.display import Markdown

    return Markdown(f"```{language}\n{text.rstrip()}\n```")


def yaml_block(text: str) -> Any:
    """YAML text, highlighted (a rendered manifest with its comments)."""
    return code_block(text, "yaml")


def self_check(name: str, answer: Any, expected: Any = _MISSING, *, check: Callable[[Any], bool] | None = None,
               hint: str = "look again") -> bool | None:
    """Print whether an exercise's answer is right: equal to `expected`, or accepted by `check`.

    Returns None (and says so) while the answer is still None, else True or False."""
    if answer is None:
        print(f"{name}: not attempted yet")
        return None
    if check is not None:
        ok = bool(check(answer))
    elif expected is not _MISSING:
        ok = answer == expected
    else:
        raise ValueError("self_check needs `expected` or `check`")
    print(f"{name}: " + ("correct" if ok else f"not quite: {answer!r} (hint: {hint})"))
    return ok


# ---------------------------------------------------------------- %%on NEED


def runs_on(target: Target, need: str) -> bool:
    """Whether a cell that needs `need` runs on this target."""
    if need not in NEEDS:
        from helpers.target import TargetError

        raise TargetError(f"Unknown need {need!r} after %%on.", f"Use one of: {', '.join(NEEDS)}.")
    if need == "local":
        return target.is_local
    if need == "eks":
        return target.is_eks
    if need == "cluster":
        return target.is_eks and bool(target.cluster)
    return target.is_eks and bool(target.aws)


def run_cell_body(shell: Any, cell: str) -> Any:
    """Run a cell's code in the notebook's namespace; the value of a final expression is returned (and shown).

    Errors propagate, so papermill and nbval see a failing cell as failed."""
    code = shell.transform_cell(cell)
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    namespace = shell.user_ns
    if tree.body:
        exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the learner's own cell
    if last is not None:
        return eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)  # noqa: S307
    return None


def last_self_check(history: list[str]) -> str:
    """The source of the most recent cell that called self_check (its `%%on ...` line removed)."""
    for source in reversed(history):
        if "self_check(" in source and not source.lstrip().startswith("%%solution") and "def self_check" not in source:
            lines = source.splitlines()
            if lines and lines[0].startswith("%%on"):
                lines = lines[1:]
            return "\n".join(lines)
    raise ValueError("no self-check cell ran before this solution: run the exercise's self-check cell first")


def check_solution(shell: Any, cell: str) -> list[str]:
    """Run a solution in a copy of the namespace, then the last self-check against it; the check lines it printed."""
    import contextlib
    import io

    namespace = dict(shell.user_ns)
    exec(compile(shell.transform_cell(cell), "<solution>", "exec"), namespace)  # noqa: S102 - the notebook's own
    raw = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)  # `In` holds the transformed
    history = raw if raw else shell.user_ns.get("In", [])  # code: a `%%on` cell there calls run_cell_magic on the
    checks = shell.transform_cell(last_self_check([str(s) for s in history]))  # real namespace, not this copy
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(checks, "<self-check>", "exec"), namespace)  # noqa: S102
    return [line for line in printed.getvalue().splitlines() if line.strip()]


def register_magics(target: Target) -> None:
    """Register `%%on NEED` and `%%solution [NEED]` in the running IPython for this target (no-op outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    state = {"last_skipped": None}

    def on(line: str, cell: str) -> Any:
        need = line.strip()
        if runs_on(target, need):
            state["last_skipped"] = None
            return run_cell_body(shell, cell)
        count = shell.execution_count
        if state["last_skipped"] is None or state["last_skipped"] != (need, count - 1):
            print(target.skip_message(need))
        state["last_skipped"] = (need, count)
        return None

    def solution(line: str, cell: str) -> None:
        need = line.strip()
        if need and not runs_on(target, need):
            print(f"the solutions are checked on the {need} target")
            return
        lines = check_solution(shell, cell)
        wrong = [x for x in lines if not x.endswith(": correct")]
        if not lines or wrong:
            raise AssertionError(f"a solution does not pass its self-check: {wrong or 'no check ran'}")
        print(f"solution checked: {len(lines)} of {len(lines)} self-checks say correct (your own answers are unchanged)")

    on.__doc__ = __doc__
    solution.__doc__ = __doc__
    shell.register_magic_function(on, magic_kind="cell", magic_name="on")
    shell.register_magic_function(solution, magic_kind="cell", magic_name="solution")
