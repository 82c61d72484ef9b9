"""Execute every notebook in order with papermill (TARGET=local by default) into build/executed/."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import papermill as pm
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT / "tools"))

import timings  # noqa: E402 - tools/ is not a package


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The workshop's notebooks in teaching order (their names start with the chapter number)."""
    from helpers import chapters

    found = [c.notebook for c in chapters.all_chapters() if c.notebook.exists()]
    if only:
        found = [nb for nb in found if any(nb.name.startswith(o) or nb.stem == o for o in only)]
    return found


def new_run_id() -> str:
    """An id for one run of the notebooks: the commit it ran and a random suffix (no timestamp)."""
    import secrets
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return f"{commit.stdout.strip() or 'nogit'}-{secrets.token_hex(3)}"


def stamp(path: Path, run_id: str, target: str) -> None:
    """Write the run's id into the executed notebook's metadata (committed outputs must all carry one id)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata["workshop"] = {"run_id": run_id, "target": target}
    nbformat.write(nb, path)


def execute(nb: Path, out_dir: Path, target: str = "local", extra: dict | None = None,
            run_id: str | None = None) -> Path:
    """Run one notebook with papermill; the executed copy keeps its outputs for the book. Its seconds go to
    build/timings.jsonl (tools/timings.py), under the phase that runs it (`make notebooks`, `make test`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / nb.name
    with timings.phase(f"{nb.stem} ({target})"):
        pm.execute_notebook(
            str(nb), str(out), parameters={"TARGET": target, **(extra or {})}, cwd=str(NOTEBOOKS),
            kernel_name="python3", progress_bar=False, log_output=False, request_save_on_cell_execute=False,
        )
    stamp(out, run_id or new_run_id(), target)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: run all (or some) notebooks and report which one failed and where."""
    parser = argparse.ArgumentParser(prog="python tools/run_notebooks.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "executed")
    parser.add_argument("--target", default="local", choices=["local", "eks"])
    parser.add_argument("--run-id", default=None, help="the id stamped into every executed notebook (default: new)")
    parser.add_argument("only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    args = parser.parse_args(argv)
    run_id = args.run_id or new_run_id()
    todo = notebooks(args.only)
    if not todo:
        print("no notebooks matched", file=sys.stderr)
        return 2
    bar = tqdm(todo, unit="notebook", desc="executing")
    for nb in bar:
        bar.set_postfix_str(nb.name)
        start = time.monotonic()
        try:
            execute(nb, args.out, args.target, run_id=run_id)
        except pm.PapermillExecutionError as exc:
            bar.close()
            print(f"\n{nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                  f"The executed copy with the traceback is {args.out / nb.name}.", file=sys.stderr)
            return 1
        tqdm.write(f"  {nb.name}: {time.monotonic() - start:.0f} s")
    print(f"run {run_id}: executed {len(todo)} notebooks into {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
