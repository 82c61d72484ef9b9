"""The stack's supervisor: restarts a local service whose process died, with backoff, as a pod's restartPolicy does.

    python -m helpers.local.supervisor --stack-dir <state>/stack      (helpers.local.stack starts it; one per stack)

Not a scheduler: it starts nothing the stack has not started before. Twice a second it reads the records of the
running services (<state>/stack/<name>.json, written by helpers.local.stack) and checks that each recorded process
is still the same, running process. When one is gone it waits its backoff (1 s, then 2, 4 ... up to 60 s while
restarts keep failing or dying young; back to 1 s once a service stays up for a minute), then calls
helpers.local.stack.restart, which starts the service exactly as `ensure` does and waits until it is healthy. A
service stopped on purpose (`stop`, `down`) has no record, so it is left alone. The restart count, the last exit
and the last restart time live in the service's record, where `python -m helpers.local.stack status` reads them.

It exits when SIGTERM arrives (`down` stops it first, so nothing is restarted while the stack stops), or when no
service has been recorded for IDLE_EXIT_S. It imports only the standard library and psutil, and each restart runs
in a short-lived child (`python -m helpers.local.stack restart-dead NAME`), so it stays a small process (~17 MB).
On Linux it is a "child subreaper": a restarted service, orphaned when that child exits, becomes its child, so
its exit status (an exit code, or the signal that killed it) is known when it dies.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from helpers.local import records

TICK_S = 0.5
IDLE_EXIT_S = 10.0
PR_SET_CHILD_SUBREAPER = 36  # prctl(2), Linux


@dataclass
class Death:
    """A recorded process found gone: when, how, and when its restart is due."""

    pid: int
    died_at: float
    reason: str
    due: float


def log(message: str) -> None:
    """One line of the supervisor's log (the stack writes stdout to <state>/logs/supervisor.log)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Supervisor:
    """Watches the recorded services of one stack folder and restarts dead ones after their backoff."""

    def __init__(self, stack_dir: Path) -> None:
        self.stack_dir = stack_dir
        self.deaths: dict[str, Death] = {}
        self.idle_since: float | None = None
        self.exits: dict[int, int] = {}  # pid -> exit status, of the children (adopted services) reaped here

    def reap(self) -> None:
        """Collect every child that ended (adopted services, their orphans): no zombies, and their exit statuses."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exits[pid] = os.waitstatus_to_exitcode(status)
            if len(self.exits) > 1000:
                self.exits.pop(next(iter(self.exits)))

    def death_of(self, name: str, record: dict[str, Any], now: float) -> Death:
        """The death being handled for this service (a new one when the record changed since)."""
        info = record.get("restarts") or {}
        known = self.deaths.get(name)
        failed_at = info.get("failed_at") if info.get("last_error") else None
        if known is None or known.pid != record.get("pid") or (failed_at and failed_at > known.died_at):
            died_at = failed_at or now
            code = self.exits.get(record.get("pid", 0))
            reason = info.get("last_reason", "") if failed_at else records.describe_exit(
                code if code is not None else records.exit_status(record))
            known = Death(record.get("pid", 0), died_at, reason, died_at + records.backoff_s(record, died_at))
            self.deaths[name] = known
            what = f"restart failed ({info['last_error'].strip().splitlines()[-1][:160]})" if failed_at else \
                f"died ({reason})"
            log(f"{name}: {what}; restarting in {known.due - now:.0f} s")
        return known

    def tick(self, now: float) -> bool:
        """Check every recorded service once, restarting those whose backoff is over; False when none is recorded."""
        self.reap()
        names = records.recorded_services(self.stack_dir)
        for name in names:
            record = records.read_record(self.stack_dir, name)
            if record is None or records.live_process(record) is not None:
                self.deaths.pop(name, None)
                continue
            death = self.death_of(name, record, now)
            if now >= death.due:
                self.restart(name, death)
                now = time.time()
        return bool(names)

    def restart(self, name: str, death: Death) -> None:
        """Restart one service through the stack (its command, environment and health check), in a child process."""
        started = time.monotonic()
        argv = [sys.executable, "-m", "helpers.local.supervisor", "--stack-dir", str(self.stack_dir),
                "--restart", name, "--reason", death.reason]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        finally:
            self.deaths.pop(name, None)
        said = (done.stdout + done.stderr).strip().splitlines()
        if done.returncode == 0:
            log(f"{name}: {said[-1] if said else 'restarted'} after {time.monotonic() - started:.1f} s")
        elif done.returncode != RESTART_NOT_DUE:
            log(f"{name}: restart failed ({said[-1][:300] if said else f'exit {done.returncode}'})")

    def should_exit(self, watching: bool, now: float) -> bool:
        """True when nothing has been recorded for IDLE_EXIT_S (checked again under the stack's lock)."""
        if watching:
            self.idle_since = None
            return False
        self.idle_since = self.idle_since or now
        if now - self.idle_since < IDLE_EXIT_S:
            return False
        with records.locked(self.stack_dir):  # an ensure() elsewhere records its service under this lock
            if records.recorded_services(self.stack_dir):
                self.idle_since = None
                return False
            forget_own_record(self.stack_dir)
        return True


RESTART_NOT_DUE = 3  # `--restart NAME`: the service was stopped or started again meanwhile


def restart_dead(name: str, reason: str, stack_dir: Path) -> int:
    """`--restart NAME` (the supervisor's child): 0 restarted, RESTART_NOT_DUE nothing due, 1 failed (retried later)."""
    from helpers.local import stack

    expected = stack.stack_dir(stack.get_settings()).resolve()
    if expected != stack_dir.resolve():
        print(f"not restarted: these settings point at {expected}, not {stack_dir}")
        return 1
    try:
        status = stack.restart(name, reason)
    except Exception as exc:  # noqa: BLE001  (the stack recorded it; the supervisor retries after the backoff)
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        return 1
    if status is None:
        return RESTART_NOT_DUE
    print(f"restarted, pid {status.pid}, healthy (restart {status.restarts})")
    return 0


def hold_singleton(fh: Any, wait_s: float = 3.0) -> bool:
    """Take the one-per-stack lock (held until exit); wait a little for a supervisor that is just leaving."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux): the services this supervisor restarts become its children."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: exit statuses stay unknown, restarts work the same
        return False


def forget_own_record(stack_dir: Path) -> None:
    """Remove the supervisor's record if it is this process's."""
    record = records.read_record(stack_dir, records.SUPERVISOR)
    if record and record.get("pid") == os.getpid():
        records.record_path(stack_dir, records.SUPERVISOR).unlink(missing_ok=True)


def stop_on_signal(*_: Any) -> None:
    """SIGTERM/SIGINT: leave at once (a restart under way is cut short; `down` then stops what it started)."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Watch the stack folder until SIGTERM or until nothing is left to watch."""
    parser = argparse.ArgumentParser(prog="python -m helpers.local.supervisor", description=__doc__.split("\n")[0])
    parser.add_argument("--stack-dir", required=True, type=Path, help="the stack's record folder (<state>/stack)")
    parser.add_argument("--restart", metavar="NAME", help="restart this dead service now, then exit (the child)")
    parser.add_argument("--reason", default="exit status unknown", help="how it died (with --restart)")
    args = parser.parse_args(argv)
    stack_dir: Path = args.stack_dir
    if args.restart:
        return restart_dead(args.restart, args.reason, stack_dir)
    stack_dir.mkdir(parents=True, exist_ok=True)
    singleton = (stack_dir / f"{records.SUPERVISOR}.lock").open("w")
    if not hold_singleton(singleton):
        log("another supervisor watches this stack; leaving")
        return 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_on_signal)
    become_subreaper()
    me = psutil.Process()
    records.write_record(stack_dir, records.SUPERVISOR, {"pid": me.pid, "create_time": me.create_time(),
                                                          "started_at": time.time()})
    log(f"watching {stack_dir} (tick {TICK_S} s, backoff {records.BACKOFF_BASE_S:.0f}-{records.BACKOFF_CAP_S:.0f} s)")
    supervisor = Supervisor(stack_dir)
    try:
        while True:
            now = time.time()
            if supervisor.should_exit(supervisor.tick(now), now):
                log("no service left to watch; exiting")
                return 0
            time.sleep(TICK_S)
    finally:
        forget_own_record(stack_dir)


if __name__ == "__main__":
    sys.exit(main())
