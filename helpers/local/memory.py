"""Resident memory of the local stack, per service: what `python -m helpers.local.stack status --memory` prints.

A service is every process of its tree: the recorded process, its children (Ray's raylet, workers, agents) and
any process carrying the service's marker. Two sums are given per service:

- RSS, resident set size: what `ps` and most tools show. Pages shared between processes (Python's libraries,
  a model file mapped by two processes) count once per process, so the RSS of a tree overstates what it costs.
- PSS, proportional set size (Linux): each shared page divided among the processes sharing it; PSS sums add
  up to the memory really used. Where the system does not report it (macOS), the column is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil

from helpers.config import Settings, get_settings
from helpers.local import records

MB = 1 << 20  # the table is in MiB; the goal in GB (10^9 bytes), as issue 13 states it
STACK_GOAL_BYTES = int(2.5e9)  # issue 13: the whole local stack (every service up and serving) <= 2.5 GB RSS


@dataclass(frozen=True)
class ProcessMemory:
    """One process of a service: its pid, a short label and its resident memory."""

    pid: int
    label: str
    rss: int
    pss: int | None


@dataclass
class ServiceMemory:
    """The memory of one service's processes."""

    name: str
    processes: list[ProcessMemory] = field(default_factory=list)

    @property
    def rss(self) -> int:
        """Sum of the processes' RSS (shared pages counted once per process)."""
        return sum(p.rss for p in self.processes)

    @property
    def pss(self) -> int | None:
        """Sum of the processes' PSS (shared pages divided among their users), None where unknown."""
        values = [p.pss for p in self.processes]
        return None if not values or any(v is None for v in values) else sum(values)  # type: ignore[misc]

    def row(self) -> dict[str, object]:
        """A table row in MB; the largest processes named (Ray's service has about fifteen)."""
        biggest = sorted(self.processes, key=lambda p: -p.rss)[:4]
        return {"service": self.name, "processes": len(self.processes), "RSS MiB": round(self.rss / MB),
                "PSS MiB": round(self.pss / MB) if self.pss is not None else "",
                "largest (RSS MiB)": ", ".join(f"{p.label} {p.rss / MB:.0f}" for p in biggest)}


def process_label(proc: psutil.Process) -> str:
    """A short, readable name: Ray's actors by their title (ray::ServeReplica:app:Embedder -> Embedder)."""
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except psutil.Error:
        return "?"
    first = cmd[0] if cmd else name
    if first.startswith("ray::"):
        return first.removeprefix("ray::").split(":")[-1].split()[0]
    for part in cmd[1:4]:  # python -m module / python script.py: the module or script names the process
        if part.endswith(".py"):
            return part.rsplit("/", 1)[-1].removesuffix(".py")
        if not part.startswith("-") and "." in part and "/" not in part:
            return part.rsplit(".", 1)[-1]
    return first.rsplit("/", 1)[-1][:24]


def measure_process(proc: psutil.Process) -> ProcessMemory | None:
    """RSS and (where the system reports it) PSS of one process; None when it is gone."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        rss = proc.memory_info().rss
        try:
            pss = getattr(proc.memory_full_info(), "pss", None)
        except (psutil.AccessDenied, NotImplementedError, OSError):
            pss = None
        return ProcessMemory(proc.pid, process_label(proc), rss, pss)
    except psutil.Error:
        return None


def service_processes(name: str, settings: Settings) -> list[psutil.Process]:
    """Every live process of one service: the recorded process, its descendants, and any carrying its marker.

    A descendant carrying another service's marker is that service's (the supervisor adopts the services it
    restarted), so no process is counted twice.
    """
    mine = records.marker_value(settings.state_dir, name)
    found: dict[int, psutil.Process] = {}
    root = records.live_process(records.read_record(settings.state_dir / "stack", name))
    if root is not None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            try:
                if proc.environ().get(records.MARKER, mine) == mine:
                    found[proc.pid] = proc
            except (psutil.Error, OSError):
                continue
    for proc in records.marked_processes(settings.state_dir, name):
        found.setdefault(proc.pid, proc)
    return list(found.values())


def measure(groups: dict[str, list[psutil.Process]]) -> list[ServiceMemory]:
    """The memory of each group of processes (service name -> its processes); empty groups are left out."""
    table = []
    for name, procs in groups.items():
        measured = [m for p in procs if (m := measure_process(p)) is not None]
        if measured:
            table.append(ServiceMemory(name, measured))
    return table


def total_row(services: list[ServiceMemory]) -> dict[str, object]:
    """The whole stack's line, with the goal beside it."""
    rss = sum(s.rss for s in services)
    pss = [s.pss for s in services]
    verdict = "within" if rss <= STACK_GOAL_BYTES else "OVER"
    return {"service": "whole stack", "processes": sum(len(s.processes) for s in services),
            "RSS MiB": round(rss / MB),
            "PSS MiB": round(sum(pss) / MB) if pss and all(p is not None for p in pss) else "",  # type: ignore[misc]
            "largest (RSS MiB)": f"{rss / 1e9:.2f} GB: {verdict} the goal for every service up (<= "
                                 f"{STACK_GOAL_BYTES / 1e9:.1f} GB RSS)"}


def rows(services: list[ServiceMemory]) -> list[dict[str, object]]:
    """The memory table: one row per running service, then the whole stack against the goal."""
    return [s.row() for s in services] + [total_row(services)]


def format_rows(rows: list[dict[str, object]]) -> str:
    """The table as plain text for the command line."""
    if not rows:
        return "(nothing running)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(f"{k:{widths[k]}}" for k in keys)]
    lines += ["  ".join(f"{r[k]!s:{widths[k]}}" for k in keys) for r in rows]
    return "\n".join(lines)


def memory_table(settings: Settings | None = None) -> list[dict[str, object]]:
    """Resident memory (RSS, and PSS on Linux) of every running service and the whole stack, against the goal.

    One row per service (all of its processes: Ray's raylet, workers and agents count for ray-serve), the
    supervisor, then the whole stack beside the goal (<= 2.5 GB RSS). Notebook 00's preflight shows it.
    """
    from helpers.local.services import SERVICES

    settings = settings or get_settings()
    groups = {name: service_processes(name, settings) for name in [*SERVICES, records.SUPERVISOR]}
    return rows(measure(groups))
