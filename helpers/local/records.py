"""What the local stack keeps on disk about each service, and how it finds, stops and restarts its processes.

One JSON record per running service in <state>/stack/<name>.json: the pid and its start time (a pid alone can be
reused), the port, and the restart history the supervisor keeps (count, the last exit, backoff). Every change is
made under one lock file, so notebooks, shells and the supervisor never start or stop a service at the same time.
Every process of the stack carries the marker variable LLM_WORKSHOP_SERVICE=<state folder>::<service>, which finds
children and strays a pid alone would miss.

Only the standard library and psutil are imported here: the supervisor process stays small.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

MARKER = "LLM_WORKSHOP_SERVICE"
SUPERVISOR = "supervisor"  # the name (record, marker, log) of the stack's own supervisor process
RESTART_POLICY_ENV = "WORKSHOP_RESTART_POLICY"  # "always" (the default, like a Deployment's pods) or "never"

# Restart backoff, like the kubelet's CrashLoopBackOff but in seconds rather than minutes: 1 s, 2 s, 4 s ... 60 s,
# back to 1 s once a restarted service has stayed up (it was healthy when restarted) for BACKOFF_RESET_S.
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
BACKOFF_RESET_S = 60.0


def restart_policy() -> str:
    """"always" (restart a service whose process died) or "never" (leave it dead, as before issue 13)."""
    value = os.environ.get(RESTART_POLICY_ENV, "always").strip().lower()
    return value if value in ("always", "never") else "always"


# ---------------------------------------------------------------- records


def record_path(stack_dir: Path, name: str) -> Path:
    """The record file of a service (or of the supervisor)."""
    return stack_dir / f"{name}.json"


def read_record(stack_dir: Path, name: str) -> dict[str, Any] | None:
    """A service's record, or None when it has none (stopped, or never started)."""
    try:
        return json.loads(record_path(stack_dir, name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_record(stack_dir: Path, name: str, record: dict[str, Any]) -> None:
    """Write a record atomically (a reader never sees half a file)."""
    path = record_path(stack_dir, name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def recorded_services(stack_dir: Path) -> list[str]:
    """Names of the services that have a record (the supervisor's own record excluded), in start order."""
    found = []
    for path in stack_dir.glob("*.json"):
        if path.stem != SUPERVISOR and (record := read_record(stack_dir, path.stem)) is not None:
            found.append((record.get("order", 99), path.stem))
    return [name for _, name in sorted(found)]


@contextmanager
def locked(stack_dir: Path) -> Iterator[None]:
    """Serialise start, stop and restart across notebooks, shells and the supervisor."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    with (stack_dir / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- processes


def marker_value(state_dir: Path, name: str) -> str:
    """The marker a service's processes carry: <state folder>::<name>."""
    return f"{state_dir.resolve()}::{name}"


def live_process(record: dict[str, Any] | None) -> psutil.Process | None:
    """The recorded process if it is still the same, running process (guards against pid reuse and zombies)."""
    if not record:
        return None
    try:
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["create_time"]) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError):
        return None


def marked_processes(state_dir: Path, name: str | None) -> list[psutil.Process]:
    """Every process carrying this stack's marker (for one service or the supervisor, or all when name is None)."""
    prefix = f"{state_dir.resolve()}::"
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            value = proc.environ().get(MARKER, "")
        except (psutil.Error, OSError):
            continue
        if value.startswith(prefix) and (name is None or value == prefix + name):
            found.append(proc)
    return found


def terminate(procs: list[psutil.Process], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is left after `grace` seconds."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def port_owner(port: int, host: str = "127.0.0.1") -> str | None:
    """Describe the process listening on a port, or None when the port is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    proc = psutil.Process(conn.pid)
                    return f"pid {conn.pid} ({proc.name()}: {' '.join(proc.cmdline())[:120]})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except psutil.AccessDenied:
        pass
    return UNSEEN_OWNER


UNSEEN_OWNER = "a process this user cannot see"


def port_owner_after_exit(port: int, host: str = "127.0.0.1", grace: float = 5.0) -> str | None:
    """port_owner, waiting up to `grace` seconds while no visible process holds the port.

    A killed multi-threaded server (llama.cpp's, uvicorn's) shows as dead as soon as its main thread is a zombie,
    but its sockets close only when its last thread has exited: for that moment the port is bound by nobody one
    can name. A port still bound after the grace period is reported as before."""
    deadline = time.monotonic() + grace
    owner = port_owner(port, host)
    while owner == UNSEEN_OWNER and time.monotonic() < deadline:
        time.sleep(0.1)
        owner = port_owner(port, host)
    return owner


# ---------------------------------------------------------------- restarts


def exit_status(record: dict[str, Any]) -> int | None:
    """How the recorded process ended: its exit code, or minus the signal that killed it; None when unknown.

    Known when this process is its parent (the supervisor, for the services it restarted), or while it is a zombie
    its parent has not collected yet (Linux shows a zombie's exit status in /proc/<pid>/stat).
    """
    pid = record.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            return None
        status = int(fields[49])  # field 52 of proc(5), counted from field 3 (the state)
        return -(status & 0x7F) if status & 0x7F else (status >> 8) & 0xFF
    except (OSError, IndexError, ValueError):
        return None


def describe_exit(code: int | None) -> str:
    """An exit status in words: 'exit 1', 'killed by SIGKILL', 'exit status unknown'."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def streak_at(record: dict[str, Any], when: float) -> int:
    """Restarts in a row that did not stay up BACKOFF_RESET_S (0 once the service has run that long)."""
    info = record.get("restarts") or {}
    if info.get("last_error"):  # the last restart failed: it never stayed up
        return int(info.get("streak", 0))
    since = info.get("last_restart") or record.get("started_at") or when
    return 0 if when - since >= BACKOFF_RESET_S else int(info.get("streak", 0))


def backoff_s(record: dict[str, Any], died_at: float) -> float:
    """Seconds to wait before restarting a service that died at `died_at`: 1, 2, 4 ... 60."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** streak_at(record, died_at))


def next_restarts(record: dict[str, Any] | None, reason: str, now: float | None = None) -> dict[str, Any]:
    """The restart history after one more restart of the service this record describes."""
    now = time.time() if now is None else now
    if not record:
        return {}
    info = dict(record.get("restarts") or {})
    info.update(count=int(info.get("count", 0)) + 1, streak=streak_at(record, now) + 1, last_restart=now,
                last_reason=reason, last_error=None)
    return info
