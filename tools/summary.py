"""What `make workshop` prints at its end: where the time went, what is running, where to look next.

    python tools/summary.py [RC]   # RC: the workshop's exit status (the breakdown is printed either way)

The phases come from build/timings.jsonl (tools/timings.py), for the run named by WORKSHOP_TIMING_RUN (else the
newest `make workshop`). The local stack's lines come from helpers.local.stack when .venv exists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import timings  # noqa: E402 - tools/ is not a package


def time_lines() -> list[str]:
    """The breakdown of this run (or the newest finished `make workshop`)."""
    run = os.environ.get(timings.RUN_VAR)
    records = timings.runs().get(run, []) if run else timings.last_run("workshop")
    if not records:
        return ["Time: nothing recorded in build/timings.jsonl"]
    return [f"Where the time went (run {records[0]['run']}; build/timings.jsonl, `make bench` reads it):",
            *timings.breakdown(records)]


def stack_lines() -> list[str]:
    """The local services, worded after what is actually running."""
    try:
        from helpers.local import stack
    except ImportError:  # no .venv yet: the set-up did not get that far
        return []
    rows = list(stack.status())
    running = [s for s in rows if s.state in {"healthy", "unhealthy"}]  # a process is there
    if not running:
        return [f"Local stack: all {len(rows)} services are stopped (notebook 10 cleans up); `make up` starts them."]
    lines = [f"Local stack: {len(running)} of {len(rows)} services running (stop them with `make down`):"]
    lines += [f"  {s.name:17} {s.state:9} {s.url}" for s in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the summary; exit 0 (the workshop's own status is passed through by make)."""
    args = sys.argv[1:] if argv is None else argv
    rc = int(args[0]) if args else 0
    print()
    print("\n".join(time_lines()))
    print()
    if rc != 0:
        print(f"`make workshop` stopped with status {rc}: the failed phase is marked FAILED above; its output is above "
              "that. Fix it and run `make workshop` again (what is done is reused).")
        return 0
    print("The workshop is ready.\n")
    lines = stack_lines()
    if lines:
        print("\n".join(lines) + "\n")
    executed = sorted((ROOT / "build" / "executed").glob("*.ipynb"))
    print(f"Executed notebooks ({len(executed)}): build/executed/")
    print("Book: build/book/_build/html/index.html")
    print("Step through the notebooks yourself: make lab\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
