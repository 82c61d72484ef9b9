"""Where the minutes go: every phase of `make workshop` and `make test` appended to build/timings.jsonl.

One JSON object a line. A run (`make workshop`, `make test`) is opened by `begin`, each phase is recorded when it
ends, and `finish` records the total; `make bench` (tools/bench_workshop.py) and tools/summary.py read them back.

    python tools/timings.py begin                       # WORKSHOP_TIMING_RUN / WORKSHOP_TIMING_KIND name the run
    python tools/timings.py run "stack up" -- make up   # run a command, record its seconds and exit status
    python tools/timings.py finish RC                   # the run's total (RC: the run's exit status)
    python tools/timings.py show [RUN]                  # the breakdown of a run (default: the newest)

Standard library only: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ROOT / "build" / "timings.jsonl"
RUN_VAR, KIND_VAR, PARENT_VAR = "WORKSHOP_TIMING_RUN", "WORKSHOP_TIMING_KIND", "WORKSHOP_TIMING_PARENT"
# Goals of issue 13, in seconds, by (run kind, phase).
GOALS: dict[tuple[str, str], float] = {("workshop", "total"): 600.0, ("workshop", "notebooks"): 300.0,
                                       ("test", "total"): 900.0}


def load() -> float | None:
    """The 1-minute load average (None where the OS has none): a measurement on a busy machine says so."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def current_run() -> tuple[str, str]:
    """(run id, kind) from the environment; outside a run, an ad-hoc id of its own (which child processes share)."""
    if not os.environ.get(RUN_VAR):
        os.environ[RUN_VAR] = f"adhoc-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
        os.environ.setdefault(KIND_VAR, "adhoc")
    return os.environ[RUN_VAR], os.environ.get(KIND_VAR, "adhoc")


def append(record: dict[str, object], path: Path | None = None) -> None:
    """Append one record (with the run, the time and the machine's load) to the timings file."""
    path = path or TIMINGS
    run, kind = current_run()
    full = {"run": run, "kind": kind, "ended": datetime.now(UTC).isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "load1": load(), **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(full) + "\n")


def record(phase: str, seconds: float, ok: bool = True, parent: str | None = None, **extra: object) -> None:
    """Record one finished phase of the current run."""
    parent = parent if parent is not None else os.environ.get(PARENT_VAR) or None
    append({"phase": phase, "seconds": round(seconds, 1), "ok": ok, **({"parent": parent} if parent else {}),
            **extra})


@contextmanager
def phase(name: str, parent: str | None = None, **extra: object) -> Iterator[None]:
    """Time a block and record it (ok=False when it raised or exited)."""
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        record(name, time.monotonic() - start, ok, parent, **extra)


def read(path: Path | None = None) -> list[dict[str, object]]:
    """Every record, oldest first (lines that are not JSON are skipped)."""
    path = path or TIMINGS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def runs(kind: str | None = None, path: Path | None = None) -> dict[str, list[dict[str, object]]]:
    """Records grouped by run id, in the order the runs began (only runs of `kind` when given)."""
    grouped: dict[str, list[dict[str, object]]] = {}
    for item in read(path):
        if "run" in item and (kind is None or item.get("kind") == kind):
            grouped.setdefault(str(item["run"]), []).append(item)
    return grouped


def last_run(kind: str, complete: bool = True, path: Path | None = None) -> list[dict[str, object]]:
    """The newest run of a kind (by default only one that reached `finish`), or []."""
    found = [recs for recs in runs(kind, path).values() if not complete or any(r.get("phase") == "total" for r in recs)]
    return found[-1] if found else []


def goal(kind: str, name: str) -> float | None:
    """The issue's goal for a phase of a run kind, if it has one."""
    return GOALS.get((kind, name))


def ordered(phases: list[dict[str, object]]) -> list[tuple[int, dict[str, object]]]:
    """(depth, phase) with each phase followed by the phases recorded inside it (which end before it does)."""
    names = {str(p["phase"]) for p in phases}
    tops = [p for p in phases if not p.get("parent") or str(p["parent"]) not in names]
    out: list[tuple[int, dict[str, object]]] = []
    for top in tops:
        out.append((0, top))
        out.extend((1, p) for p in phases if p.get("parent") == top["phase"] and p is not top)
    return out


def breakdown(records: list[dict[str, object]]) -> list[str]:
    """Lines of a table: each phase, its seconds, its share of the total, the goal where there is one."""
    phases = [r for r in records if r.get("phase") not in {"begin", "total"}]
    total = next((r for r in records if r.get("phase") == "total"), None)
    if not phases and not total:
        return ["no timings recorded"]
    kind = str(records[0].get("kind", "adhoc"))
    rows = ordered(phases)
    whole = float(total["seconds"]) if total else sum(float(p["seconds"]) for depth, p in rows
                                                      if depth == 0 and not p.get("background"))
    width = max([len(str(p["phase"])) + 2 + 2 * depth for depth, p in rows] + [8])
    lines = [f"{'phase':{width}} {'seconds':>8} {'share':>6}  note"]
    for depth, p in rows:
        name = "  " * (depth + 1) + str(p["phase"])
        share = f"{100 * float(p['seconds']) / whole:5.0f}%" if whole and depth == 0 and not p.get("background") else ""
        lines.append(f"{name:{width}} {float(p['seconds']):8.1f} {share:>6}  {note(kind, p)}")
    if total:
        lines.append(f"{'  total':{width}} {float(total['seconds']):8.1f} {'':>6}  {note(kind, total)}")
    return lines


def note(kind: str, item: dict[str, object]) -> str:
    """What to say beside a phase: failed, the goal met or missed, background work, the load while it ran."""
    bits = []
    if not item.get("ok", True):
        bits.append("FAILED")
    target = goal(kind, str(item.get("phase")))
    if target is not None and item.get("ok", True):
        bits.append(f"goal <= {target:.0f} s: {'ok' if float(item['seconds']) <= target else 'MISSED'}")
    if item.get("note"):
        bits.append(str(item["note"]))
    if item.get("load1") is not None:
        bits.append(f"load {item['load1']} on {item.get('cores')} cores")
    return "; ".join(bits)


def begin() -> int:
    """Open the current run: its start time and the load the machine had then."""
    append({"phase": "begin", "started": time.time()})
    return 0


def finish(rc: int) -> int:
    """Close the current run with its total (seconds since `begin`) and whether it succeeded."""
    run, _ = current_run()
    starts = [float(r["started"]) for r in runs().get(run, []) if r.get("phase") == "begin"]
    if not starts:
        print(f"timings: run {run} was never begun; no total recorded", file=sys.stderr)
        return 0
    append({"phase": "total", "seconds": round(time.time() - starts[-1], 1), "ok": rc == 0})
    return 0


def run_command(name: str, cmd: list[str]) -> int:
    """Run a command with the terminal as it is, record its seconds and status, return its exit code."""
    start = time.monotonic()
    env = {**os.environ, PARENT_VAR: name}  # phases recorded by the command itself nest under this one
    try:
        rc = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        rc = 130
    record(name, time.monotonic() - start, rc == 0)
    return rc


def main(argv: list[str] | None = None) -> int:
    """Command line: begin | run NAME -- CMD... | finish RC | show [RUN]."""
    parser = argparse.ArgumentParser(prog="python tools/timings.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("begin")
    p = sub.add_parser("run")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("finish")
    p.add_argument("rc", type=int)
    p = sub.add_parser("show")
    p.add_argument("run", nargs="?")
    args = parser.parse_args(argv)
    if args.cmd == "begin":
        return begin()
    if args.cmd == "finish":
        return finish(args.rc)
    if args.cmd == "run":
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not cmd:
            parser.error("run needs a command after --")
        return run_command(args.name, cmd)
    grouped = runs()
    if not grouped:
        print("no timings recorded yet (build/timings.jsonl)")
        return 0
    run = args.run or list(grouped)[-1]
    print(f"run {run}:")
    print("\n".join(breakdown(grouped.get(run, []))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
