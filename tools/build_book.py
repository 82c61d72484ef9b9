"""Build the Jupyter Book (offline) from book/ pages and the executed notebooks into build/book/.

Staging (build/book-src) holds book/ as written plus what is computed at build time, so no figure in the
book is typed by hand and no page links to a notebook that does not exist yet:

- `_toc.yml`: intro, architecture, every `notebooks/NN-*.ipynb` present (in chapter order, see
  helpers/data/chapters.yaml), glossary, troubleshooting, cost. There is no _toc.yml in book/: this is the only one.
- `_config.yml`: book/_config.yml plus MyST substitutions: `{{ nb02 }}` is a link to notebook 02 when it
  exists (else its name in plain text), `{{ cost_total }}` and friends are computed by helpers.infra.scheduling.
- `generated/*.md`: tables the pages pull in with `{include}` (computed in tools/book_tables.py): the chapters, the local services, the hourly
  cost part by part of the default platform (`scheduling.platform_cost(default_workloads, pools).rows()` for
  `Target("eks")`), the optional parts priced apart, what each notebook adds to it, the spend caps, how each pool scales down, the probes of every server, and the Pending-pod decoder
  on real event texts.
- `images/architecture.png`: drawn again from helpers.diagrams (the committed copy is for readers of the repository).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book_tables import (  # noqa: E402 - tools/ is not a package: its folder goes on the path first
    book_target,
    chapter_substitutions,
    chapters_table,
    cost_pages,
    decoder_examples,
    local_services_table,
    probes_table,
)

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "book-src"
OUT = ROOT / "build" / "book"
EXECUTED = ROOT / "build" / "executed"
NOTEBOOKS = ROOT / "notebooks"
GENERATED = "generated"  # folder inside the staged source; its pages are only ever included, never listed
HTML = OUT / "_build" / "html"

PAGES_BEFORE = ("architecture", "primer")
PAGES_AFTER = ("glossary", "troubleshooting", "cost")


# ---------------------------------------------------------------- notebooks and the table of contents


def notebook_files() -> list[Path]:
    """Every notebook present, in teaching order (helpers/data/chapters.yaml), then any unlisted one by name."""
    from helpers import chapters

    listed = [c.notebook for c in chapters.all_chapters() if c.notebook.exists()]
    return listed + sorted(set(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")) - set(listed))


def notebook_title(path: Path) -> str:
    """The notebook's title: the text of the first `# ` heading in its first markdown cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            break
    raise ValueError(f"{path.name} has no `# NN · Title` heading in its first markdown cell")


def toc(stems: list[str]) -> dict[str, Any]:
    """The book's table of contents for the notebooks present."""
    return {
        "format": "jb-book",
        "root": "intro",
        "parts": [
            {"caption": "The platform", "chapters": [{"file": p} for p in PAGES_BEFORE]},
            {"caption": "Notebooks", "chapters": [{"file": f"notebooks/{s}"} for s in stems]},
            {"caption": "Reference", "chapters": [{"file": p} for p in PAGES_AFTER]},
        ],
    }


# ---------------------------------------------------------------- markdown helpers


# ---------------------------------------------------------------- computed pages


# ---------------------------------------------------------------- staging and building


def _failed_under_papermill(nb: Any) -> bool:
    """Whether papermill stopped on an exception in this executed notebook (it adds a red banner cell)."""
    if (nb.metadata.get("papermill") or {}).get("exception"):
        return True
    return any("papermill-error-cell-tag" in (c.metadata.get("tags") or []) for c in nb.cells)


BOOK_LINK = re.compile(r"\]\(\.\./book/([^)#]+\.md)")  # a notebook's link to a book page, as it works in JupyterLab


def book_links(nb: Any) -> Any:
    """The notebook with its `../book/page.md` links pointing where the book puts the page (`../page.md`)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = BOOK_LINK.sub(r"](../\1", cell.source)
    return nb


def _copy_notebook(nb: Path, dest: Path) -> None:
    """Stage the executed copy (sanitized) when it is a successful run, else the committed notebook."""
    executed = EXECUTED / nb.name
    source = nbformat.read(nb, as_version=4)
    if executed.exists():
        run = nbformat.read(executed, as_version=4)
        if _failed_under_papermill(run):
            print(f"book: {executed.relative_to(ROOT)} is a failed run; the book shows the committed {nb.name}",
                  file=sys.stderr)
        else:
            sys.path.insert(0, str(ROOT / "tools"))
            from sanitize_notebooks import sanitize

            source = sanitize(run)
    nbformat.write(book_links(source), dest)


def stage() -> Path:
    """Copy the pages and the notebooks (executed copies when present), then generate the computed parts."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    shutil.copytree(ROOT / "book", STAGE, ignore=shutil.ignore_patterns("_build", "_toc.yml"))
    from helpers import diagrams

    diagrams.save_architecture(STAGE / "images" / "architecture.png")  # drawn from the code, never a stale copy
    (STAGE / "notebooks").mkdir()
    from helpers import chapters

    known = set(chapters.ids())
    titles: dict[str, str] = {}
    for nb in notebook_files():
        if nb.stem not in known:
            print(f"book: {nb.name} is not listed in helpers/data/chapters.yaml; added in file-name order",
                  file=sys.stderr)
        _copy_notebook(nb, STAGE / "notebooks" / nb.name)
        titles[nb.stem] = notebook_title(STAGE / "notebooks" / nb.name)  # the copy the book shows

    header = "# Generated by tools/build_book.py from the notebooks/NN-*.ipynb present; do not edit.\n"
    (STAGE / "_toc.yml").write_text(header + yaml.safe_dump(toc(list(titles)), sort_keys=False))

    t = book_target()
    generated = STAGE / GENERATED
    generated.mkdir()
    files, subs = cost_pages(titles)
    files["chapters.md"] = chapters_table(titles)
    files["local-services.md"] = local_services_table()
    files["probes.md"] = probes_table(t)
    files["pending-examples.md"] = decoder_examples()
    for name, text in files.items():
        (generated / name).write_text(text)

    config_path = STAGE / "_config.yml"
    config = yaml.safe_load(config_path.read_text())
    parse = config.setdefault("parse", {})
    parse["myst_substitutions"] = {**(parse.get("myst_substitutions") or {}), **chapter_substitutions(titles), **subs}
    config_path.write_text("# Generated by tools/build_book.py from book/_config.yml plus computed substitutions.\n"
                           + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (generated / "substitutions.json").write_text(json.dumps(parse["myst_substitutions"], indent=1) + "\n")
    return STAGE


WARNING = re.compile(r"WARNING|ERROR|CRITICAL")


def main(argv: list[str] | None = None) -> int:
    """Stage and build; print every Sphinx warning and where the site is."""
    parser = argparse.ArgumentParser(prog="python tools/build_book.py", description=__doc__.splitlines()[0])
    parser.add_argument("--stage-only", action="store_true", help="write build/book-src and stop")
    args = parser.parse_args(argv)
    try:
        src = stage()
    except Exception as error:  # a chapter's manifests or a notebook that cannot be read: say which, stop
        print(f"book: staging failed, {type(error).__name__}: {error}\n"
              "Fix the file named above (`python -m helpers.infra.manifests check` checks every chapter's manifests), "
              "then re-run `make book`.", file=sys.stderr)
        return 1
    if args.stage_only:
        print(f"book: staged {src.relative_to(ROOT)}")
        return 0
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(src), "--path-output", str(OUT), "--quiet"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        print("book: build failed (see above)", file=sys.stderr)
        return 1
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if WARNING.search(line)]
    for line in warnings:
        print("book: " + re.sub(r"\x1b\[[0-9;]*m", "", line).replace(str(STAGE) + "/", ""))
    index = HTML / "index.html"
    print(f"book: built {index.relative_to(ROOT)} ({len(warnings)} warning(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
