"""The local stack: start, health-check, restart and stop the workshop's services on this machine."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import requests

from helpers.config import Settings, get_settings
from helpers.errors import StackError
from helpers.local.services import DEFAULT_SERVICES, SERVICES, Service

MARKER = "LLM_WORKSHOP_SERVICE"


class PortInUse(StackError):
    """The port a service needs is taken by a process that is not this workshop's service."""




@dataclass
class ServiceStatus:
    """What one service is doing right now."""

    name: str
    state: str  # healthy, starting, unhealthy, stopped, dead
    url: str
    pid: int | None
    log: str
    description: str

    def as_row(self) -> dict[str, object]:
        """A table row (the log path relative to the project)."""
        return asdict(self)


# ---------------------------------------------------------------- state on disk


def _stack_dir(settings: Settings) -> Path:
    path = settings.state_dir / "stack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(name: str, settings: Settings | None = None) -> Path:
    """The log file of a service."""
    settings = settings or get_settings()
    path = settings.state_dir / "logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _record_path(name: str, settings: Settings) -> Path:
    return _stack_dir(settings) / f"{name}.json"


def _read_record(name: str, settings: Settings) -> dict | None:
    path = _record_path(name, settings)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise start/stop across notebooks and shells."""
    with (_stack_dir(settings) / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _marker_value(name: str, settings: Settings) -> str:
    return f"{settings.state_dir.resolve()}::{name}"


def _live_process(record: dict | None) -> psutil.Process | None:
    """The recorded process if it is still the same process (guards against pid reuse)."""
    if not record:
        return None
    try:
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["create_time"]) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return None


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
    return "a process this user cannot see"


# ---------------------------------------------------------------- process control


def _processes_of(name: str | None, settings: Settings) -> list[psutil.Process]:
    """Every process carrying this stack's marker (for one service, or all), children included."""
    prefix = f"{settings.state_dir.resolve()}::"
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            value = proc.environ().get(MARKER, "")
        except (psutil.Error, OSError):
            continue
        if value.startswith(prefix) and (name is None or value == prefix + name):
            found.append(proc)
    return found


def _terminate(procs: list[psutil.Process], grace: float = 10.0) -> None:
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


def _stop_locked(name: str, settings: Settings) -> bool:
    record = _read_record(name, settings)
    procs: list[psutil.Process] = []
    if (proc := _live_process(record)) is not None:
        try:
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
    procs += [p for p in _processes_of(name, settings) if p.pid not in {q.pid for q in procs}]
    _terminate(procs)
    _record_path(name, settings).unlink(missing_ok=True)
    return bool(procs)


def _start_locked(service: Service, settings: Settings) -> psutil.Process:
    port = service.port(settings)
    owner = port_owner(port, settings.host)
    if owner:
        raise PortInUse(
            f"Port {port} on {settings.host}, needed by {service.name}, is taken by {owner}. "
            f"Stop that process, or pick another port: set WORKSHOP_{service.port_setting.upper()}=<port> "
            f"in .env and re-run."
        )
    argv = service.argv(settings)
    log = log_path(service.name, settings)
    env = {**os.environ, **service.environment(settings), MARKER: _marker_value(service.name, settings),
           "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        out.write(f"\n=== starting {service.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True, close_fds=True)
    proc = psutil.Process(popen.pid)
    record = {"pid": popen.pid, "create_time": proc.create_time(), "port": port, "argv0": argv[0]}
    _record_path(service.name, settings).write_text(json.dumps(record))
    return proc


def _wait_healthy(service: Service, settings: Settings, proc: psutil.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _is_healthy(service, settings, timeout=1.0):
            return
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            raise StackError(
                f"{service.name} exited during start-up. Last lines of its log "
                f"({log_path(service.name, settings)}):\n{tail(service.name, 20, settings)}"
            )
        time.sleep(0.1)
    _stop_locked(service.name, settings)
    raise StackError(
        f"{service.name} did not become healthy within {timeout:.0f} s; it was stopped. "
        f"Last lines of its log:\n{tail(service.name, 20, settings)}\n"
        f"Fix: read the log with `python -m helpers.local.stack logs {service.name}`."
    )


# ---------------------------------------------------------------- public API


def get_service(name: str) -> Service:
    """The definition of a service, or a clear error listing the known ones."""
    try:
        return SERVICES[name]
    except KeyError:
        raise StackError(f"Unknown service {name!r}. Known services: {', '.join(SERVICES)}") from None


def ensure(name: str, timeout: float | None = None) -> ServiceStatus:
    """Make sure a service (and what it requires) is running and healthy; start or restart it if not."""
    settings = get_settings()
    service = get_service(name)
    for dep in service.requires:
        ensure(dep)
    with _locked(settings):
        proc = _live_process(_read_record(name, settings))
        if proc is not None and _is_healthy(service, settings):
            return service_status(name)
        if proc is not None:  # alive but not answering: give it its start-up time, then restart it
            try:
                _wait_healthy(service, settings, proc, timeout or service.start_timeout)
                return service_status(name)
            except StackError:
                pass
        _stop_locked(name, settings)  # clears a stale record and any stray process of this service
        proc = _start_locked(service, settings)
        _wait_healthy(service, settings, proc, timeout or service.start_timeout)
    return service_status(name)


def stop(name: str) -> bool:
    """Stop a service and every process it started; True when something was running."""
    settings = get_settings()
    get_service(name)
    with _locked(settings):
        return _stop_locked(name, settings)


def down() -> list[str]:
    """Stop every service of the stack (in reverse start order) and sweep any stray process."""
    settings = get_settings()
    stopped = []
    with _locked(settings):
        for name in reversed(list(SERVICES)):
            if _stop_locked(name, settings):
                stopped.append(name)
        strays = _processes_of(None, settings)
        _terminate(strays)
    return stopped


def up(names: tuple[str, ...] | list[str] = DEFAULT_SERVICES) -> list[ServiceStatus]:
    """Ensure the given services (default: the model servers) are healthy."""
    return [ensure(name) for name in names]


def service_status(name: str) -> ServiceStatus:
    """The state of one service."""
    settings = get_settings()
    service = get_service(name)
    record = _read_record(name, settings)
    proc = _live_process(record)
    if proc is None:
        state = "dead" if record else "stopped"
    elif _is_healthy(service, settings):
        state = "healthy"
    else:
        state = "unhealthy"
    log = log_path(name, settings)
    try:
        log_shown = str(log.relative_to(settings.state_dir.parent))
    except ValueError:
        log_shown = str(log)
    return ServiceStatus(name=name, state=state, url=service.url(settings), pid=proc.pid if proc else None,
                         log=log_shown, description=service.description)


def status() -> list[ServiceStatus]:
    """The state of every service the stack knows."""
    return [service_status(name) for name in SERVICES]


def running_processes() -> list[psutil.Process]:
    """Every process on this machine that belongs to this workshop's stack."""
    return _processes_of(None, get_settings())


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


def main(argv: list[str] | None = None) -> int:
    """Command line: up, down, status, logs NAME."""
    parser = argparse.ArgumentParser(prog="python -m helpers.local.stack", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start services and wait until healthy")
    p_up.add_argument("names", nargs="*", help=f"services (default: {' '.join(DEFAULT_SERVICES)})")
    sub.add_parser("down", help="stop every service; leaves no process behind")
    sub.add_parser("status", help="show each service, its state and URL")
    p_logs = sub.add_parser("logs", help="print the end of a service's log")
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
            for st in status():
                print(f"{st.name:18} {st.state:9} {st.url:32} pid={st.pid or '-':<8} log={st.log}")
        elif args.cmd == "logs":
            print(tail(args.name, args.lines))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
