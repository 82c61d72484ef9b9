"""Bench figures: how long a learner and a maintainer wait (issue 13's goals).

    .venv/bin/python tools/bench_workshop.py [--no-run]

- `make workshop` <= 10 min and its notebooks <= 5 min, `make test` <= 15 min: read from build/timings.jsonl, where
  `make workshop` and `make test` record every phase (tools/timings.py). Each row says which run it comes from,
  how old it is, whether it was fresh (the llama-cpp-python wheel built in it) and the load the machine had.
- The sum of the notebooks' own papermill durations (metadata.papermill of build/executed/*.ipynb) as a second
  view of the notebooks' time. Only notebooks with no record, or one older than MAX_AGE_H or from the eks target,
  are executed here (tools/run_notebooks.py, isolated ports and state) before the sum is taken; --no-run skips that.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import timings  # noqa: E402 - tools/ is not a package

EXECUTED = ROOT / "build" / "executed"
NOTEBOOKS_S = timings.GOALS[("workshop", "notebooks")]
MAX_AGE_H = 24.0 * 7  # a record older than a week no longer says much about this machine
WHEEL_BUILD = "llama-cpp-python wheel build"


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


def usable(record: dict[str, object] | None) -> bool:
    """A record counts when it exists, ran the local target and is recent enough."""
    return bool(record) and record["target"] == "local" and float(record["age_h"]) <= MAX_AGE_H


def age_h(record: dict[str, object]) -> float:
    """Hours since a timings record was written."""
    return (datetime.now(UTC) - datetime.fromisoformat(str(record["ended"]))).total_seconds() / 3600


def phase_of(records: list[dict[str, object]], name: str) -> dict[str, object] | None:
    """The last record of a phase in a run."""
    found = [r for r in records if r.get("phase") == name]
    return found[-1] if found else None


def run_rows(kind: str, figure: str) -> list[dict[str, object]]:
    """The newest finished run of `make <kind>`: its total against the goal, then each phase (info)."""
    from bench import row

    records = timings.last_run(kind)
    target = timings.goal(kind, "total")
    goal = f"<= {target:.0f} s" if target else "-"
    if not records:
        return [row(figure, f"no finished `make {kind}` recorded (build/timings.jsonl)", goal, None)]
    total = phase_of(records, "total")
    fresh = phase_of(records, WHEEL_BUILD) is not None
    how = (f"{'fresh (wheel built)' if fresh else 'warm (wheel cached)'}, {age_h(total):.1f} h ago, "
           f"load {total.get('load1')} on {total.get('cores')} cores")
    ok = None if not total.get("ok") else float(total["seconds"]) <= target if target else None
    rows = [row(figure, f"{float(total['seconds']):.0f} s{'' if total.get('ok') else ' (FAILED run)'}",
                f"{goal}; {how}", ok)]
    for depth, p in timings.ordered([r for r in records if r.get("phase") not in {"begin", "total"}]):
        sub = timings.goal(kind, str(p["phase"]))
        rows.append(row("  " * (depth + 1) + str(p["phase"]), f"{float(p['seconds']):.0f} s"
                        + ("" if p.get("ok", True) else " FAILED"), f"<= {sub:.0f} s" if sub else "-",
                        (float(p["seconds"]) <= sub) if sub and depth == 0 else None))
    return rows


def papermill_rows(run_missing: bool) -> list[dict[str, object]]:
    """Sum of the latest local papermill duration of every notebook (recorded ones reused) against the goal."""
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
    rows.insert(0, row("notebooks' own papermill durations, summed", value,
                       f"<= {NOTEBOOKS_S:.0f} s (kernel time only)", (total <= NOTEBOOKS_S) if complete else None))
    return rows


def bench_workshop(run_missing: bool = True) -> list[dict[str, object]]:
    """Every waiting-time figure: `make workshop` with its phases, the notebooks, `make test` with its phases."""
    return [*run_rows("workshop", "`make workshop` (set-up, stack, notebooks, book)"),
            *papermill_rows(run_missing),
            *run_rows("test", "`make test` (the whole suite)")]


def main() -> int:
    """Print the figures and where each number came from (runs notebooks only when no usable record exists)."""
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
