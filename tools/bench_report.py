"""`make bench`'s report kept as data, and the README's performance table written from it.

    .venv/bin/python tools/bench_report.py --readme              # README table <- build/bench/report.json
    .venv/bin/python tools/bench_report.py --readme other.json   # ... from another saved report

tools/bench.py saves every run's rows with the machine and the commit they were measured on (build/bench/report.json);
`make bench-readme` puts the last report into README.md between the two marker comments, so the table's numbers
are the bench's own output, never typed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "build" / "bench" / "report.json"
README = ROOT / "README.md"
START, END = "<!-- make bench: start -->", "<!-- make bench: end -->"
VERDICTS = {True: "ok", False: "missed", None: "info"}


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and count, memory, system (runs in the workshop environment)."""
    import psutil

    sys.path.insert(0, str(ROOT))
    from helpers.layers.vllm.benchmark.report import cpu_model

    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "system": f"{platform.system()} {platform.machine()}"}


def commit() -> str:
    """The checkout's commit (short), with `+changes` when the work tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def save(rows: list[dict[str, object]], path: Path = REPORT) -> dict[str, Any]:
    """Keep one run's rows with its machine, commit and date; returns the report."""
    report = {"measured": datetime.date.today().isoformat(), "commit": commit(), "machine": machine(), "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")  # a numpy number is written as text
    return report


def cell(value: object) -> str:
    """One table cell: pipes escaped, the indent of a sub-row kept visible."""
    text = " ".join(str(value).replace("|", "\\|").split("\n"))
    return "&nbsp;&nbsp;" + text.strip() if text.startswith("  ") else text


def markdown(report: dict[str, Any]) -> str:
    """The performance table for the README: every row, then the machine and the commit it was measured on."""
    m = report["machine"]
    lines = [f"Measured by `make bench` on {report['measured']} at commit `{report['commit']}`: {m['cpus']} CPUs "
             f"({m['cpu']}), {m['memory_gib']} GiB, {m['system']}. Ratios and paired differences come from one run.",
             "", "| figure | measured | goal | result |", "|---|---|---|---|"]
    lines += [f"| {cell(r['figure'])} | {cell(r['value'])} | {cell(r['target'])} | {VERDICTS[r['ok']]} |"
              for r in report["rows"]]
    return "\n".join(lines)


def update_readme(report: dict[str, Any], path: Path = README) -> None:
    """Replace what stands between the README's two markers by the table of `report`."""
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path.name} has no {START} ... {END} markers: add them where the table belongs.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{markdown(report)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Command line: --readme [REPORT]."""
    parser = argparse.ArgumentParser(prog="tools/bench_report.py", description=__doc__.split("\n")[0])
    parser.add_argument("--readme", nargs="?", const=str(REPORT), metavar="REPORT",
                        help="write the README's table from a saved report (default: the last `make bench`)")
    args = parser.parse_args(argv)
    if not args.readme:
        parser.print_help()
        return 2
    source = Path(args.readme)
    if not source.exists():
        raise SystemExit(f"{source} does not exist: run `make bench` first.")
    update_readme(json.loads(source.read_text()))
    print(f"README.md: performance table written from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
