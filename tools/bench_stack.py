"""Local stack figures (issue 13): memory of the whole stack up and serving, and restarts after a kill.

    .venv/bin/python tools/bench_stack.py                 # both, on an isolated stack of its own
    .venv/bin/python tools/bench_stack.py memory          # only the memory table

- memory: every service of the platform started (the test/bench-only embedding server excepted), one request of
  each kind served (chat and embeddings through the gateway, chat through the Ray Serve app, the knowledge base
  ingested and one question asked through the agent API), then the resident memory of every service's process
  tree (helpers.local.memory): RSS, as the goal counts it, and PSS beside it.
- restarts: each running service's process is killed with SIGKILL; the stack's supervisor must bring it back,
  healthy, within the service's start timeout, with no call from here.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench import isolated_stack, print_rows, row  # noqa: E402  (one report format, one way to isolate a stack)

BENCH_ONLY = ("embedding-server",)  # not part of the platform: the memory figure leaves it out
QUESTION = "How does Karpenter choose an instance type for a pending pod?"


def platform_services() -> list[str]:
    """The services a learner's stack runs (Redis only where redis-server is installed)."""
    from helpers.local.services import SERVICES

    return [n for n in SERVICES if n not in BENCH_ONLY and (n != "redis" or shutil.which("redis-server"))]


def serve_once(settings: object) -> list[str]:
    """One request of each kind through the running stack; returns what failed (empty when all answered)."""
    import httpx

    from helpers.target import Target

    t = Target("local", settings)  # type: ignore[arg-type]
    failed = []
    calls = {
        "chat via gateway": lambda: t.gateway.client(max_retries=0, timeout=300).chat.completions.create(
            model=t.chat.model, max_tokens=16, temperature=0, messages=[{"role": "user", "content": "Say hello."}],
            extra_body={"cache": {"no-cache": True}}),
        "embeddings via gateway": lambda: t.gateway.client(max_retries=0, timeout=300).embeddings.create(
            model=t.gateway_embeddings.model, input=[f"text {i}" for i in range(32)]),
        "chat via Ray Serve": lambda: t.embeddings.client(max_retries=0, timeout=300).chat.completions.create(
            model=t.chat.model, max_tokens=16, temperature=0, messages=[{"role": "user", "content": "Say hi."}]),
    }
    key = settings.agent_api_key.get_secret_value() if settings.agent_api_key else ""  # type: ignore[attr-defined]
    base = f"http://{settings.host}:{settings.agent_api_port}"  # type: ignore[attr-defined]
    for path, body in (("/ingest", {}), ("/query", {"question": QUESTION})):
        calls[f"agent API {path}"] = (lambda p=path, b=body: httpx.post(
            base + p, json=b, headers={"Authorization": f"Bearer {key}"}, timeout=900).raise_for_status())
    for name, call in calls.items():
        try:
            call()
        except Exception as exc:  # noqa: BLE001  (reported in the row; memory is still measured)
            failed.append(f"{name}: {type(exc).__name__}")
    return failed


def bench_memory() -> list[dict[str, object]]:
    """Start every platform service, serve one request of each kind, then the memory table against the goal."""
    from helpers.local import memory, stack

    with isolated_stack() as settings:
        for name in platform_services():
            stack.ensure(name)
        failed = serve_once(settings)
        table = memory.measure({n: memory.service_processes(n, settings) for n in [*stack.SERVICES, stack.SUPERVISOR]})
    rows = [row(f"  memory: {s.name} ({len(s.processes)} processes)",
                f"{s.rss / memory.MB:.0f} MiB RSS" + (f", {s.pss / memory.MB:.0f} MiB PSS" if s.pss else ""),
                "info", None) for s in table]
    total = sum(s.rss for s in table)
    pss = sum(s.pss or 0 for s in table)
    served = "served" if not failed else f"served, except {', '.join(failed)}"
    rows.insert(0, row(f"memory of the whole local stack ({len(table)} services up, {served})",
                       f"{total / 1e9:.2f} GB RSS ({pss / 1e9:.2f} GB PSS)",
                       f"<= {memory.STACK_GOAL_BYTES / 1e9:.1f} GB RSS", total <= memory.STACK_GOAL_BYTES))
    return rows


def kill_and_wait(name: str, settings: object) -> tuple[float | None, str]:
    """SIGKILL a service's process, then wait for the supervisor to bring it back healthy; (seconds, detail)."""
    from helpers.local import stack

    before = stack.service_status(name)
    if before.pid is None:
        return None, "not running"
    started = time.monotonic()
    os.kill(before.pid, signal.SIGKILL)
    timeout = stack.get_service(name).start_timeout + 70  # its start, plus detection and the first backoff
    while time.monotonic() - started < timeout:
        now = stack.service_status(name)
        if now.state == "healthy" and now.pid not in (None, before.pid):
            return time.monotonic() - started, f"restarts={now.restarts} ({now.last_restart})"
        time.sleep(0.5)
    return None, f"not back within {timeout:.0f} s: {stack.service_status(name).state}"


def bench_restarts(names: list[str] | None = None) -> list[dict[str, object]]:
    """Kill each running service of the (isolated) stack; each must be back, healthy, within its start timeout."""
    from helpers.local import stack

    rows = []
    with isolated_stack() as settings:
        running = names or [s.name for s in stack.status() if s.state == "healthy"]
        if not running:
            stack.ensure("model-server")
            running = ["model-server"]
        for name in running:
            took, detail = kill_and_wait(name, settings)
            limit = stack.get_service(name).start_timeout
            rows.append(row(f"kill -9 {name}: back and healthy (supervisor)",
                            f"{took:.1f} s, {detail}" if took is not None else detail,
                            f"<= {limit:.0f} s (its start timeout)", took is not None and took <= limit))
    return rows


def main() -> int:
    """Run the memory and restart figures (or those named) on one isolated stack."""
    wanted = sys.argv[1:] or ["memory", "restarts"]
    rows: list[dict[str, object]] = []
    with isolated_stack():
        if "memory" in wanted:
            rows += bench_memory()
        if "restarts" in wanted:
            rows += bench_restarts()
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
