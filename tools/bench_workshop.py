"""Bench figure: "`make workshop` on a warm machine executes all notebooks in at most 10 minutes on 2 cores".

    .venv/bin/python tools/bench_workshop.py

Reads what was already recorded instead of re-running every notebook: each executed notebook under
build/executed/ carries papermill's own timing (metadata.papermill: start_time, duration, parameters), written
by tools/run_notebooks.py (`make notebooks`, `make workshop`); build/timings.jsonl holds the totals `make
workshop` appends. It prints the source and age of every record. Only notebooks with no record, or one older
than MAX_AGE_H or from the eks target, are executed here (with tools/run_notebooks.py) before the sum is taken.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

EXECUTED = ROOT / "build" / "executed"
TIMINGS = ROOT / "build" / "timings.jsonl"
TARGET_S = 600.0
MAX_AGE_H = 24.0 * 7  # a record older than a week no longer says much about this machine


def notebook_record(path: Path) -> dict[str, object] | None:
    """papermill's timing of one executed notebook: duration (s), when it ran, target; None if absent."""
    try:
        meta = json.loads(path.read_text())["metadata"].get("papermill") or {}
    except (OSError, ValueError, KeyError):
        return None
    if meta.get("duration") is None or not meta.get("end_time"):
        return None
    ended = datetime.fromisoformat(meta["end_time"])
    return {"notebook": path.stem, "duration_s": float(meta["duration"]), "ended": ended,
            "age_h": (datetime.now(UTC) - ended).total_seconds() / 3600,
            "target": (meta.get("parameters") or {}).get("TARGET", "local"), "source": str(path.relative_to(ROOT))}


def workshop_records() -> list[dict[str, object]]:
    """The `make workshop` totals appended to build/timings.jsonl (newest last), with the file's age."""
    if not TIMINGS.exists():
        return []
    runs = [json.loads(line) for line in TIMINGS.read_text().splitlines() if line.strip()]
    age_h = (time.time() - TIMINGS.stat().st_mtime) / 3600
    return [{**r, "age_h": age_h} for r in runs]


def usable(record: dict[str, object] | None) -> bool:
    """A record counts when it exists, ran the local target and is recent enough."""
    return bool(record) and record["target"] == "local" and float(record["age_h"]) <= MAX_AGE_H


def bench_workshop(run_missing: bool = True) -> list[dict[str, object]]:
    """Sum of the latest local execution time of every notebook (recorded ones reused) against 600 s."""
    import run_notebooks
    from bench import row

    notebooks = run_notebooks.notebooks()
    records = {nb.stem: notebook_record(EXECUTED / nb.name) for nb in notebooks}
    missing = [nb for nb in notebooks if not usable(records[nb.stem])]
    ran_here = []
    if missing and run_missing:
        for nb in missing:
            run_notebooks.execute(nb, EXECUTED, "local")
            records[nb.stem] = notebook_record(EXECUTED / nb.name)
            ran_here.append(nb.stem)
    rows = []
    for name, rec in records.items():
        if rec is None:
            rows.append(row(f"  notebook {name}", "no record", "-", None))
            continue
        how = "executed now by this bench" if name in ran_here else f"recorded {float(rec['age_h']):.1f} h ago"
        rows.append(row(f"  notebook {name}", f"{float(rec['duration_s']):.0f} s", f"{how}, {rec['source']}", None))
    counted = [r for r in records.values() if usable(r)]
    total = sum(float(r["duration_s"]) for r in counted)
    complete = len(counted) == len(notebooks)
    value = f"{total:.0f} s over {len(counted)}/{len(notebooks)} notebooks" + ("" if complete else " (incomplete)")
    rows.insert(0, row("`make workshop` on a warm machine executes all notebooks in at most 10 minutes on 2 cores",
                       value, f"<= {TARGET_S:.0f} s (sum of papermill durations)",
                       (total <= TARGET_S) if complete else None))
    for run in workshop_records()[-1:]:
        rows.append(row("  last `make workshop` total (build/timings.jsonl)",
                        f"{run.get('total_s')} s (set-up {run.get('setup_s')} s)",
                        f"recorded {float(run['age_h']):.1f} h ago; includes set-up, stack start and book", None))
    return rows


def main() -> int:
    """Print the figure and where each number came from (runs notebooks only when no usable record exists)."""
    run_missing = "--no-run" not in sys.argv
    if run_missing:
        from bench import isolated_env

        os.environ.update(isolated_env())  # a notebook run here must not disturb a learner's stack
    try:
        rows = bench_workshop(run_missing)
    finally:
        if run_missing:
            from helpers.local import stack

            stack.down()
    from bench import print_rows

    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
