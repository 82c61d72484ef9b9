"""The shape of the code: no import cycle, no oversized module without a reason, no helper defined in two notebooks,
programs that import only what their image or venv has, and a short set-up cell in every notebook."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("helpers", "services")  # the import graph's nodes: every module of these packages
MAX_LINES = 450
REASON = "Why one module:"  # a docstring line starting so explains why a module stays longer than MAX_LINES
SETUP_CELL_LINES = 6
# Programs under services/ that run in the workshop's venv (the laptop launcher) or in the agent image, which
# ships helpers/: they may import the library. Every other program runs where helpers/ is not installed.
MAY_IMPORT_HELPERS = ("services/ray_app/local_launcher.py", "services/agent_api/")


# ---------------------------------------------------------------- modules and their imports


def module_name(path: Path) -> str:
    """helpers/infra/manifests/__init__.py -> helpers.infra.manifests; services/otel.py -> services.otel."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports that never run."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at module level and inside functions, not under TYPE_CHECKING."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imported_names(path: Path, name: str) -> set[str]:
    """The dotted names a module imports: `import a.b` gives a.b, `from a import b` a.b (a module, or a name in a);
    relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        found.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports (`from a import name`: the module a)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges = set()
        for imported in imported_names(path, name):
            if imported in known:
                edges.add(imported)
            elif imported.rpartition(".")[0] in known:
                edges.add(imported.rpartition(".")[0])
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_in(graph, component) for component in components]


def cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest closed import path through the first module (by name) of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected component


def test_the_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def test_imports_are_resolved_at_every_level(tmp_path: Path) -> None:
    source = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nimport helpers.config\n"
              "from . import chapters\nfrom .errors import WorkshopError\n"
              "if TYPE_CHECKING:\n    from helpers.target import Target\n"
              "def later():\n    from helpers.layers import models\n")
    path = tmp_path / "mod.py"
    path.write_text(source)
    names = imported_names(path, "helpers.mod")
    assert names == {"__future__.annotations", "typing.TYPE_CHECKING", "helpers.config", "helpers.chapters",
                     "helpers.errors.WorkshopError", "helpers.layers.models"}, "TYPE_CHECKING imports never run"


def test_no_import_cycle_among_the_library_and_the_programs() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (module-level and function-level imports count):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


# ---------------------------------------------------------------- module size


def test_no_module_over_450_lines_without_a_reason() -> None:
    offenders = []
    for folder in ("helpers", "services", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            lines = len(text.splitlines())
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if lines > MAX_LINES and not any(line.strip().startswith(REASON) for line in docstring.splitlines()):
                offenders.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not offenders, (f"modules over {MAX_LINES} lines: split them along their ideas, or say why not in a "
                           f"docstring line starting with {REASON!r}:\n" + "\n".join(offenders))


# ---------------------------------------------------------------- programs import what their image has


def imports_helpers(path: Path) -> list[str]:
    """The imports of helpers in a file, at any level (TYPE_CHECKING ones too: the name must exist where it runs)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f"line {node.lineno}: {n}" for n in names if n == "helpers" or n.startswith("helpers.")]
    return found


def test_programs_import_the_library_only_where_it_is_installed() -> None:
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        where = str(path.relative_to(ROOT))
        if where.startswith(MAY_IMPORT_HELPERS):
            continue
        offenders += [f"{where} {found}" for found in imports_helpers(path)]
    assert not offenders, ("programs under services/ (the Ray app, the MCP servers, the llama.cpp server, the "
                           "gateway hooks, the Phoenix launcher, services/otel.py) run where helpers/ is not "
                           "installed, yet import it:\n" + "\n".join(offenders))


# ---------------------------------------------------------------- notebooks


def notebook_paths() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def python_of(cell_source: str) -> str:
    """A code cell as Python: a cell magic's line dropped (`%%on local` cells hold Python), line magics and
    shell escapes blanked; a cell whose magic runs something else (%%bash, %%writefile) is no Python at all."""
    lines = cell_source.splitlines()
    if lines and lines[0].startswith("%%"):
        if not re.match(r"%%(on|time|capture)\b", lines[0]):
            return ""
        lines = lines[1:]
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def defined_functions(path: Path) -> set[str]:
    """Names of the functions a notebook defines at the top level of its code cells."""
    names = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(python_of(cell.source), f"{path.name} cell {cell.get('id', '?')}")
        names.update(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def test_no_function_is_defined_in_two_notebooks() -> None:
    where: dict[str, list[str]] = {}
    for path in notebook_paths():
        for name in defined_functions(path):
            where.setdefault(name, []).append(path.stem)
    twice = {name: stems for name, stems in sorted(where.items()) if len(stems) > 1}
    assert not twice, ("functions defined in more than one notebook belong in the library (helpers/, e.g. "
                       "helpers.notebook):\n" + "\n".join(f"{n}: {', '.join(s)}" for n, s in twice.items()))


def test_python_of_keeps_the_code_of_on_cells() -> None:
    assert python_of("%%on local\ndef f():\n    return 1") == "def f():\n    return 1"
    assert python_of("%matplotlib inline\ndef g(): pass") == "\ndef g(): pass"
    assert python_of("%%bash\necho hi") == ""


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_the_set_up_cell_is_short(path: Path) -> None:
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    params = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] + 1 < len(code), "one parameters cell, followed by the set-up cell"
    setup = code[params[0] + 1].source.strip().splitlines()
    assert len(setup) <= SETUP_CELL_LINES, (f"the set-up cell (after the parameters) has {len(setup)} lines; at most "
                                            f"{SETUP_CELL_LINES}:\n" + "\n".join(setup))
