"""Build the Jupyter Book (offline) from book/ pages and the executed notebooks into build/book/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "book-src"
OUT = ROOT / "build" / "book"
EXECUTED = ROOT / "build" / "executed"


def stage() -> Path:
    """Copy the book pages and the notebooks (executed copies when present) into one source folder."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    shutil.copytree(ROOT / "book", STAGE, ignore=shutil.ignore_patterns("_build"))
    (STAGE / "notebooks").mkdir()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        executed = EXECUTED / nb.name
        src = executed if executed.exists() else nb
        if src is executed:
            sys.path.insert(0, str(ROOT / "tools"))
            import nbformat
            from sanitize_notebooks import sanitize

            nbformat.write(sanitize(nbformat.read(src, as_version=4)), STAGE / "notebooks" / nb.name)
        else:
            shutil.copy2(src, STAGE / "notebooks" / nb.name)
    return STAGE


def main() -> int:
    """Stage and build; print where the site is."""
    src = stage()
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(src), "--path-output", str(OUT), "--quiet"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        print("book: build failed (see above)", file=sys.stderr)
        return 1
    index = OUT / "_build" / "html" / "index.html"
    print(f"book: built {index.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
