"""Clean up the local target (notebook 10): stop the stack, prove no process is left, optionally remove caches and keys.

Proof, not trust: after `stack.down()` the process table is searched three independent ways for anything of
this stack (the marker variable every service process carries, command lines that name this stack's state
folder, the pids the stack recorded), and every service port must be free again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

from helpers.config import ENV_FILE, GENERATED_SECRETS, ROOT, Settings, get_settings
from helpers.local.stack import MARKER, SERVICES, port_owner

BUILD_DIR = ROOT / "build"


@dataclass(frozen=True)
class StackProcess:
    """A process of the stack found in the process table, and which check found it."""

    pid: int
    name: str
    command: str
    found_by: str
    service: str = "?"  # the service (or "supervisor") it belongs to, from its marker or its record

    def row(self) -> dict[str, object]:
        """A table row: the service, the pid, the program and how it was found."""
        return {"service": self.service, "pid": self.pid, "process": self.name, "found by": self.found_by}


def _recorded_pids(settings: Settings) -> dict[int, str]:
    """pid -> the name of the record (service or supervisor) that holds it."""
    import json

    pids = {}
    for record in (settings.state_dir / "stack").glob("*.json"):
        try:
            pids[int(json.loads(record.read_text())["pid"])] = record.stem
        except (OSError, ValueError, KeyError):
            continue
    return pids


def stack_processes(settings: Settings | None = None) -> list[StackProcess]:
    """Every live process of this stack: by marker variable, by a command line naming the state folder, by recorded pid."""
    settings = settings or get_settings()
    state = str(settings.state_dir.resolve())
    recorded = _recorded_pids(settings)
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(proc.info["cmdline"] or [])
            reasons, service = [], recorded.get(proc.info["pid"], "?")
            try:
                marker = proc.environ().get(MARKER, "")
                if marker.startswith(f"{state}::"):
                    reasons.append("marker")
                    service = marker.removeprefix(f"{state}::")
            except (psutil.AccessDenied, OSError):
                pass
            if state in command:
                reasons.append("command line")
            if proc.info["pid"] in recorded:
                reasons.append("recorded pid")
            if reasons:
                found.append(StackProcess(proc.info["pid"], proc.info["name"] or "?", command[:140], "+".join(reasons),
                                          service))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def busy_ports(settings: Settings | None = None) -> dict[str, str]:
    """Service ports that something still listens on (service name -> owner); empty when all are free."""
    settings = settings or get_settings()
    busy = {}
    for name, service in SERVICES.items():
        owner = port_owner(service.port(settings), settings.host)
        if owner:
            busy[f"{name} :{service.port(settings)}"] = owner
    return busy


@dataclass(frozen=True)
class Removable:
    """Something on disk the workshop made that a learner may remove: where, what it is, how big."""

    what: str
    path: Path
    size_bytes: int
    kind: str  # "cache" or "keys"

    def row(self) -> dict[str, str]:
        """A table row (paths relative to the project or the home folder)."""
        return {"what": self.what, "where": display(self.path), "size": f"{self.size_bytes / 2**20:,.1f} MiB",
                "removed by": "REMOVE_CACHES" if self.kind == "cache" else "REMOVE_KEYS"}


def display(path: Path) -> str:
    """A path shown relative to the project or the home folder."""
    for base, label in ((ROOT, ""), (Path.home(), "~/")):
        try:
            return label + str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def size_of(path: Path) -> int:
    """Bytes under a path (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.exists() else 0


def removables(settings: Settings | None = None, env_file: Path = ENV_FILE, build_dir: Path = BUILD_DIR
               ) -> list[Removable]:
    """What REMOVE_CACHES and REMOVE_KEYS would delete, with sizes (only paths that exist)."""
    settings = settings or get_settings()
    items = [
        Removable("verified model files (re-fetched and re-checked by `make models`)", settings.models_dir,
                  size_of(settings.models_dir), "cache"),
        Removable("local state: service logs and configs, vector index, MCP workspace", settings.state_dir,
                  size_of(settings.state_dir), "cache"),
        Removable("build output: executed notebooks, benchmark results, the book", build_dir,
                  size_of(build_dir), "cache"),
    ]
    present = [i for i in items if i.path.exists()]
    names = generated_keys_in(env_file)
    if names:
        present.append(Removable(f"generated keys in .env: {', '.join(names)}", env_file, env_file.stat().st_size,
                                 "keys"))
    return present


def generated_keys_in(env_file: Path = ENV_FILE) -> list[str]:
    """The names of the workshop's generated secrets present in the .env file (values never read out)."""
    if not env_file.exists():
        return []
    names = {line.partition("=")[0].strip() for line in env_file.read_text().splitlines() if "=" in line}
    return [n for n in GENERATED_SECRETS if n in names]


def remove_caches(settings: Settings | None = None, build_dir: Path = BUILD_DIR) -> list[str]:
    """Delete the model cache, the state folder and build output; return what was removed (stop the stack first)."""
    settings = settings or get_settings()
    if stack_processes(settings):
        raise RuntimeError("The stack is still running: stop it first (helpers.local.stack.down()), then remove caches.")
    removed = []
    for item in removables(settings, build_dir=build_dir):
        if item.kind == "cache":
            shutil.rmtree(item.path, ignore_errors=True)
            removed.append(display(item.path))
    return removed


def remove_generated_keys(env_file: Path = ENV_FILE) -> list[str]:
    """Remove only the generated secret lines from .env (other lines stay); return the names removed."""
    names = generated_keys_in(env_file)
    if not names:
        return []
    kept = [line for line in env_file.read_text().splitlines()
            if line.partition("=")[0].strip() not in GENERATED_SECRETS]
    env_file.write_text("\n".join(kept) + ("\n" if kept else ""))
    return names
