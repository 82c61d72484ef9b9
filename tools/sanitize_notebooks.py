"""Make executed notebooks safe to commit: no secrets, no machine paths, no volatile metadata.

`refresh` copies build/executed/*.ipynb (papermill runs, TARGET=local) over notebooks/ after
sanitizing them; `check` fails when a committed notebook leaks a secret, a path or a timestamp.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SECRET_PATTERNS = [
    re.compile(r"sk-(?:workshop|local|serve)-[A-Za-z0-9_-]{16,}"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"hf_[A-Za-z0-9]{30,}"),
    re.compile(r"(?:sk|pk)-lf-[0-9a-f-]{20,}"),
    re.compile(r"tvly-[A-Za-z0-9]{20,}"),
]
TIMESTAMP_PATTERN = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?|\b\d{8}T\d{6}Z")
PATH_PATTERN = re.compile(r"(?<![\w.])/(?:root|home|tmp|work|Users|private/var)/[^\s'\"<>)\],]*")
VOLATILE_NB_META = ("papermill",)
VOLATILE_CELL_META = ("execution", "papermill")
IGNORE_MARKER = "# NBVAL_IGNORE_OUTPUT"  # first line of a cell whose output varies; the reason may follow
IGNORE_TAG = "nbval-ignore-output"


def env_secrets() -> list[str]:
    """Secret values from the project's .env (to redact wherever they appear)."""
    env = ROOT / ".env"
    if not env.exists():
        return []
    values = []
    for line in env.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            value = line.partition("=")[2].strip()
            if len(value) >= 12:
                values.append(value)
    return values


def clean_text(text: str, secrets: list[str]) -> str:
    """Redact secrets, replace machine paths with portable ones and timestamps with `<timestamp>`."""
    for value in secrets:
        text = text.replace(value, "<redacted>")
    for pattern in SECRET_PATTERNS:
        text = pattern.sub("<redacted>", text)
    text = text.replace(str(ROOT), ".").replace(str(Path.home()), "~")
    text = TIMESTAMP_PATTERN.sub("<timestamp>", text)  # a committed output must not change from run to run
    return PATH_PATTERN.sub("<path>", text)


def _clean(value: object, secrets: list[str]) -> object:
    if isinstance(value, str):
        return clean_text(value, secrets)
    if isinstance(value, list):
        return [_clean(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v, secrets) for k, v in value.items()}
    return value


def sanitize(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop papermill's injected cell and volatile metadata; scrub every output."""
    secrets = env_secrets()
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for key in VOLATILE_NB_META:
        nb.metadata.pop(key, None)
    for count, cell in enumerate(nb.cells, start=1):
        for key in VOLATILE_CELL_META:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            tags = cell.metadata.setdefault("tags", [])
            if cell.source.lstrip().startswith(IGNORE_MARKER) and IGNORE_TAG not in tags:
                tags.append(IGNORE_TAG)  # nbval only honours a bare marker line; the tag carries the intent
            if not tags:
                del cell.metadata["tags"]
            cell.execution_count = count
            outputs = []
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count
                outputs.append(nbformat.from_dict(_clean(dict(out), secrets)))
            cell.outputs = outputs
    return nb


def problems(path: Path) -> list[str]:
    """What in a committed notebook would leak or make it unstable."""
    text = path.read_text()
    found = []
    for value in env_secrets():
        if value in text:
            found.append("holds a value from .env")
    for pattern in SECRET_PATTERNS:
        if pattern.search(text):
            found.append(f"matches secret pattern {pattern.pattern}")
    if m := re.search(r'"/(root|home|tmp|work|Users)/', text):
        found.append(f"holds an absolute machine path ({m.group(0)}...)")
    nb = nbformat.reads(text, as_version=4)
    if "papermill" in nb.metadata:
        found.append("holds papermill run metadata (timestamps)")
    if any("execution" in c.metadata for c in nb.cells):
        found.append("holds per-cell execution timestamps")
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    if m := TIMESTAMP_PATTERN.search(outputs):
        found.append(f"an output holds a timestamp ({m.group(0)}): re-run tools/sanitize_notebooks.py refresh")
    return found


def main(argv: list[str] | None = None) -> int:
    """Command line: refresh [NAMES] | check."""
    parser = argparse.ArgumentParser(prog="python tools/sanitize_notebooks.py", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("refresh")
    p.add_argument("--from", dest="src", type=Path, default=ROOT / "build" / "executed")
    p.add_argument("names", nargs="*")
    sub.add_parser("check")
    args = parser.parse_args(argv)
    if args.cmd == "refresh":
        for src in sorted(args.src.glob("*.ipynb")):
            if args.names and not any(src.name.startswith(n) for n in args.names):
                continue
            nb = sanitize(nbformat.read(src, as_version=4))
            nbformat.write(nb, NOTEBOOKS / src.name)
            print(f"refreshed notebooks/{src.name}")
        return 0
    bad = 0
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for problem in problems(path):
            print(f"{path.name}: {problem}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
