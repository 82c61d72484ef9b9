"""The local stack: start, health-check, restart and stop the workshop's services on this machine.

Like a Deployment's pods under `restartPolicy: Always`, a service whose process dies is started again by the
stack itself: `ensure`/`up` also start the stack's supervisor (helpers.local.supervisor), one small process per
state folder that watches the recorded processes and restarts a dead one with exponential backoff (1 s .. 60 s).
`down` stops the supervisor first, then every service. `status` shows restarts; `status --memory` the memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import requests

from helpers.config import Settings, get_settings
from helpers.errors import StackError
from helpers.local import memory, records
from helpers.local.records import MARKER, SUPERVISOR, port_owner
from helpers.local.services import DEFAULT_SERVICES, SERVICES, Service

__all__ = ["MARKER", "SERVICES", "SUPERVISOR", "PortInUse", "ServiceStatus", "StackError", "down", "ensure",
           "exports_spans", "get_service", "port_owner", "restart", "running_processes",
           "service_status", "status", "stop", "supervisor_status", "tail", "up"]
SUPERVISOR_START_S = 10.0  # the supervisor is up (its record written) within this


class PortInUse(StackError):
    """The port a service needs is taken by a process that is not this workshop's service."""


@dataclass
class ServiceStatus:
    """What one service is doing right now, and how often the stack restarted it."""

    name: str
    state: str  # healthy, unhealthy, stopped, dead (waiting for its restart), or crash-looping (restarts failing)
    url: str
    pid: int | None
    log: str
    description: str
    restarts: int = 0
    last_restart: str = ""  # "12:03:04, killed by SIGKILL" (when, and how the process before it ended)

    def as_row(self) -> dict[str, object]:
        """A table row (the log path relative to the project)."""
        return asdict(self)


# ---------------------------------------------------------------- state on disk


def stack_dir(settings: Settings) -> Path:
    """The folder of the records (<state>/stack)."""
    path = settings.state_dir / "stack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(name: str, settings: Settings | None = None) -> Path:
    """The log file of a service."""
    settings = settings or get_settings()
    path = settings.state_dir / "logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _read_record(name: str, settings: Settings) -> dict | None:
    return records.read_record(stack_dir(settings), name)


def _locked(settings: Settings):  # noqa: ANN202  (a context manager)
    return records.locked(stack_dir(settings))


def recorded_process(name: str, settings: Settings | None = None) -> psutil.Process | None:
    """The live process recorded for a service (or the supervisor), None when there is none."""
    return records.live_process(_read_record(name, settings or get_settings()))


def marked_processes(name: str | None, settings: Settings | None = None) -> list[psutil.Process]:
    """Every process carrying this stack's marker, for one service (or the supervisor), or all of them."""
    return records.marked_processes((settings or get_settings()).state_dir, name)


# ---------------------------------------------------------------- health and ports


def _is_healthy(service: Service, settings: Settings, timeout: float = 2.0) -> bool:
    if service.health_check:
        return bool(service.health_check(settings))
    headers = {}
    if service.auth_setting and (key := getattr(settings, service.auth_setting)):
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    url = f"http://{settings.host}:{service.port(settings)}{service.health_path}"
    try:
        return requests.get(url, headers=headers, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


# ---------------------------------------------------------------- process control


def _service_processes(name: str, settings: Settings) -> list[psutil.Process]:
    """The recorded process of a service, its children, and any process marked as the service's."""
    proc = records.live_process(_read_record(name, settings))
    try:
        procs = [proc, *proc.children(recursive=True)] if proc is not None else []
    except psutil.NoSuchProcess:
        procs = []
    return procs + [p for p in marked_processes(name, settings) if p.pid not in {q.pid for q in procs}]


def _stop_locked(*names: str, settings: Settings, keep_scratch: bool = False) -> list[str]:
    """Stop these services together (one grace period), forget their records and scratch folders; those stopped."""
    found = {name: _service_processes(name, settings) for name in names}
    records.terminate(list({p.pid: p for procs in found.values() for p in procs}.values()))
    for name in names:
        records.record_path(stack_dir(settings), name).unlink(missing_ok=True)
        if (scratch := get_service(name).scratch) is not None and not keep_scratch:
            shutil.rmtree(scratch(settings), ignore_errors=True)
    return [name for name in names if found[name]]


def _spawn(name: str, argv: list[str], env: dict[str, str], settings: Settings) -> subprocess.Popen:
    log = log_path(name, settings)
    env = {**os.environ, **env, MARKER: records.marker_value(settings.state_dir, name), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        out.write(f"\n=== starting {name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, close_fds=True)


def _start_locked(service: Service, settings: Settings, restarts: dict | None = None) -> psutil.Process:
    port = service.port(settings)
    owner = records.port_owner_after_exit(port, settings.host)
    if owner:
        raise PortInUse(
            f"Port {port} on {settings.host}, needed by {service.name}, is taken by {owner}. "
            f"Stop that process, or pick another port: set WORKSHOP_{service.port_setting.upper()}=<port> "
            f"in .env and re-run."
        )
    popen = _spawn(service.name, service.argv(settings), service.environment(settings), settings)
    proc = psutil.Process(popen.pid)
    record = {"pid": popen.pid, "create_time": proc.create_time(), "port": port, "argv0": popen.args[0],
              "order": list(SERVICES).index(service.name), "started_at": time.time(), "restarts": restarts or {}}
    records.write_record(stack_dir(settings), service.name, record)
    return proc


def _wait_healthy(service: Service, settings: Settings, proc: psutil.Process, timeout: float) -> None:
    """Wait for the health check; a service that exits or stays unhealthy is stopped (record removed) and reported."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _is_healthy(service, settings, timeout=1.0):
            _warm_up(service, settings)
            return
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            _stop_locked(service.name, settings=settings, keep_scratch=True)  # reported, not retried; logs kept
            raise StackError(
                f"{service.name} exited during start-up. Last lines of its log "
                f"({log_path(service.name, settings)}):\n{tail(service.name, 20, settings)}"
            )
        time.sleep(0.1)
    _stop_locked(service.name, settings=settings, keep_scratch=True)
    raise StackError(
        f"{service.name} did not become healthy within {timeout:.0f} s; it was stopped. "
        f"Last lines of its log:\n{tail(service.name, 20, settings)}\n"
        f"Fix: read the log with `python -m helpers.local.stack logs {service.name}`."
    )


def _warm_up(service: Service, settings: Settings) -> None:
    """The service's warm-up requests, if it has any; problems go to its log (they do not fail the start)."""
    if service.warm_up is None:
        return
    started = time.monotonic()
    try:
        problems = service.warm_up(settings)
    except Exception as exc:  # noqa: BLE001  (a warm-up is an optimisation: never a reason to fail a start)
        problems = [f"{type(exc).__name__}: {exc}"]
    line = f"warm-up: {'; '.join(problems) if problems else 'done'} in {time.monotonic() - started:.1f} s"
    with log_path(service.name, settings).open("a") as out:
        out.write(f"=== {service.name} {line}\n")


# ---------------------------------------------------------------- the supervisor


def _ensure_supervisor(settings: Settings) -> None:
    """Start the stack's supervisor unless it runs (or the restart policy is "never"); callers hold the lock."""
    if records.restart_policy() == "never" or records.live_process(_read_record(SUPERVISOR, settings)):
        return
    folder = stack_dir(settings)
    popen = _spawn(SUPERVISOR, [sys.executable, "-m", "helpers.local.supervisor", "--stack-dir", str(folder)], {},
                   settings)
    deadline = time.monotonic() + SUPERVISOR_START_S
    while time.monotonic() < deadline and popen.poll() is None:
        record = _read_record(SUPERVISOR, settings)
        if record and record.get("pid") == popen.pid:
            return
        time.sleep(0.05)
    if popen.poll() is None:  # it is slow (a busy machine), not failing: it will write its record
        return
    if records.live_process(_read_record(SUPERVISOR, settings)) is None:  # not "another one won the race"
        # the services run; only the restarts are missing: say so, do not fail the caller's start
        print(f"warning: the stack's supervisor exited at start (code {popen.returncode}); dead services will not "
              f"be restarted until the next ensure(). Its log:\n{tail(SUPERVISOR, 20, settings)}", file=sys.stderr)


def _stop_supervisor(settings: Settings) -> bool:
    """Stop the supervisor (first, so that nothing is restarted while the stack stops); True when it ran."""
    procs = {p.pid: p for p in marked_processes(SUPERVISOR, settings)}
    if (proc := recorded_process(SUPERVISOR, settings)) is not None:
        procs[proc.pid] = proc
    records.terminate(list(procs.values()), grace=15)
    records.record_path(stack_dir(settings), SUPERVISOR).unlink(missing_ok=True)
    return bool(procs)


def supervisor_status(settings: Settings | None = None) -> ServiceStatus:
    """The supervisor's line in `status`: running (and its pid) or stopped."""
    settings = settings or get_settings()
    proc = recorded_process(SUPERVISOR, settings)
    policy = records.restart_policy()
    what = f"restarts dead services with backoff {records.BACKOFF_BASE_S:.0f}-{records.BACKOFF_CAP_S:.0f} s " \
           f"(restart policy: {policy}, {records.RESTART_POLICY_ENV})"
    return ServiceStatus(name=SUPERVISOR, state="running" if proc else "stopped", url="-",
                         pid=proc.pid if proc else None, log=_shown(log_path(SUPERVISOR, settings), settings),
                         description=what)


# ---------------------------------------------------------------- public API


def get_service(name: str) -> Service:
    """The definition of a service, or a clear error listing the known ones."""
    try:
        return SERVICES[name]
    except KeyError:
        raise StackError(f"Unknown service {name!r}. Known services: {', '.join(SERVICES)}") from None


def ensure(name: str, timeout: float | None = None) -> ServiceStatus:
    """Make sure a service (and what it requires) is running and healthy; start or restart it if not.

    Also starts the stack's supervisor, which from then on restarts the service if its process dies.
    """
    settings = get_settings()
    service = get_service(name)
    for dep in service.requires:
        ensure(dep)
    with _locked(settings):
        record = _read_record(name, settings)
        proc = records.live_process(record)
        if proc is not None and _is_healthy(service, settings):
            _ensure_supervisor(settings)
            return service_status(name)
        reason = "was not answering its health check"
        if proc is not None:  # alive but not answering: give it its start-up time, then restart it
            try:
                _wait_healthy(service, settings, proc, timeout or service.start_timeout)
                _ensure_supervisor(settings)
                return service_status(name)
            except StackError:
                record = None  # _wait_healthy stopped it: a fresh start, not a restart
        elif record is not None:
            reason = records.describe_exit(records.exit_status(record))
        restarts = records.next_restarts(record, reason) if record else None
        _stop_locked(name, settings=settings)  # clears a stale record and any stray process of this service
        proc = _start_locked(service, settings, restarts)
        _wait_healthy(service, settings, proc, timeout or service.start_timeout)
        _ensure_supervisor(settings)
    return service_status(name)


def restart(name: str, reason: str = "exit status unknown") -> ServiceStatus | None:
    """Start again a service whose recorded process died (the supervisor calls this); None when nothing was due.

    A failed restart keeps the service's record, with the error, so the supervisor tries again after its backoff;
    `stop` or `down` end that.
    """
    settings = get_settings()
    service = get_service(name)
    with _locked(settings):
        record = _read_record(name, settings)
        if record is None or records.live_process(record) is not None:
            return None  # stopped on purpose meanwhile, or started again by someone else
        restarts = records.next_restarts(record, reason)
        _stop_locked(name, settings=settings)
        try:
            proc = _start_locked(service, settings, restarts)
            _wait_healthy(service, settings, proc, service.start_timeout)
        except Exception as exc:  # noqa: BLE001  (StackError, a port taken, a command builder's error: all retried)
            failed = {**record, "restarts": {**restarts, "last_error": str(exc)[-400:], "failed_at": time.time()}}
            records.write_record(stack_dir(settings), name, failed)
            raise
    return service_status(name)


def stop(name: str) -> bool:
    """Stop a service and every process it started; True when something was running. The supervisor lets it be."""
    settings = get_settings()
    get_service(name)
    with _locked(settings):
        return bool(_stop_locked(name, settings=settings))


LAST_TO_STOP = ("phoenix",)  # the trace store: the others export their last spans to it as they stop


def down() -> list[str]:
    """Stop the supervisor, then every service, then sweep any stray process; the names stopped.

    The services get SIGTERM together and share one grace period, so the stack stops in the time of its slowest
    service, not the sum (25 s for notebook 10's nine, one by one); LAST_TO_STOP waits for the others."""
    settings = get_settings()
    _stop_supervisor(settings)  # first: nothing may be restarted while the stack stops
    with _locked(settings):
        _stop_supervisor(settings)  # one that an ensure() elsewhere started meanwhile
        stopped = _stop_locked(*[n for n in reversed(list(SERVICES)) if n not in LAST_TO_STOP], settings=settings)
        stopped += _stop_locked(*LAST_TO_STOP, settings=settings)
        records.terminate(marked_processes(None, settings))
    return stopped


def up(names: tuple[str, ...] | list[str] = DEFAULT_SERVICES) -> list[ServiceStatus]:
    """Ensure the given services (default: the chat model server) are healthy; the supervisor watches them."""
    return [ensure(name) for name in names]


def _shown(path: Path, settings: Settings) -> str:
    try:
        return str(path.relative_to(settings.state_dir.parent))
    except ValueError:
        return str(path)


def service_status(name: str) -> ServiceStatus:
    """The state of one service, with its restarts."""
    settings = get_settings()
    service = get_service(name)
    record = _read_record(name, settings)
    proc = records.live_process(record)
    info = (record or {}).get("restarts") or {}
    if proc is None:
        state = "stopped" if not record else "crash-looping" if info.get("last_error") else "dead"
    elif _is_healthy(service, settings):
        state = "healthy"
    else:
        state = "unhealthy"
    last = ""
    if info.get("last_restart"):
        last = f"{time.strftime('%H:%M:%S', time.localtime(info['last_restart']))}, {info.get('last_reason', '')}"
        if info.get("last_error"):
            last += f"; restart failed: {info['last_error'].strip().splitlines()[0][:120]}"
    return ServiceStatus(name=name, state=state, url=service.url(settings), pid=proc.pid if proc else None,
                         log=_shown(log_path(name, settings), settings), description=service.description,
                         restarts=int(info.get("count", 0)), last_restart=last)


def status() -> list[ServiceStatus]:
    """The state of every service the stack knows (the supervisor's is supervisor_status())."""
    return [service_status(name) for name in SERVICES]


def running_processes() -> list[psutil.Process]:
    """Every process on this machine that belongs to this workshop's stack (the supervisor included)."""
    return marked_processes(None, get_settings())


def tail(name: str, lines: int = 50, settings: Settings | None = None) -> str:
    """The last lines of a service's log."""
    path = log_path(name, settings)
    if not path.exists():
        return f"(no log yet at {path})"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 200_000))
        return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])


def exports_spans(name: str) -> bool | None:
    """Whether a running local service was started with a trace endpoint (None when it is not running)."""
    pid = service_status(name).pid
    if pid is None:
        return None
    try:
        env = psutil.Process(pid).environ()
    except psutil.Error:
        return None
    # servers export over standard OTLP variables; LiteLLM's otel/langfuse_otel callbacks read their own
    return any(env.get(var) for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_ENDPOINT", "LANGFUSE_OTEL_HOST"))


def print_status(with_memory: bool = False) -> None:
    """`status`: each service's state, URL, pid and restarts, the supervisor; with_memory: the memory table too."""
    for st in [*status(), supervisor_status()]:
        restarts = f"restarts={st.restarts}" + (f" (last {st.last_restart})" if st.last_restart else "")
        print(f"{st.name:17} {st.state:13} {st.url:32} pid={st.pid or '-':<8} {restarts:12} log={st.log}")
    if with_memory:
        print("\nresident memory (RSS counts shared pages once per process; PSS divides them among their users):")
        print(memory.format_rows(memory.memory_table()))


def main(argv: list[str] | None = None) -> int:
    """Command line: up, down, status [--memory], restart NAME, logs NAME."""
    parser = argparse.ArgumentParser(prog="python -m helpers.local.stack", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start services and wait until healthy")
    p_up.add_argument("names", nargs="*", help=f"services (default: {' '.join(DEFAULT_SERVICES)})")
    sub.add_parser("down", help="stop the supervisor and every service; leaves no process behind")
    p_status = sub.add_parser("status", help="show each service, its state, URL and restarts")
    p_status.add_argument("--memory", action="store_true", help="also the resident memory of every service")
    p_logs = sub.add_parser("logs", help="print the end of a service's log (or the supervisor's)")
    p_logs.add_argument("name")
    p_logs.add_argument("-n", "--lines", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            for st in up(args.names or DEFAULT_SERVICES):
                print(f"{st.name:18} {st.state:9} {st.url}")
        elif args.cmd == "down":
            stopped = down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
            left = running_processes()
            if left:
                print(f"still running: {[p.pid for p in left]}")
                return 1
        elif args.cmd == "status":
            print_status(args.memory)
        elif args.cmd == "logs":
            print(tail(args.name, args.lines))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
