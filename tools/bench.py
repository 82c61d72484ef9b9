"""`make bench`: measure the figures the issues name, each beside its baseline from the same run.

    .venv/bin/python tools/bench.py                      # every bench (make bench)
    .venv/bin/python tools/bench.py --only stack-up gateway

Every bench runs in ONE isolated stack (a state folder and ports of its own, so a learner's running workshop is
never disturbed); a bench run alone isolates itself the same way (isolated_stack). At the end that stack is
stopped and the process table is checked: the last row says how many of its processes are left (0 expected).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Explain in detail how a Kubernetes scheduler places a pod on a node."}]
MAX_TOKENS = 96
ROUNDS = 3


def row(figure: str, value: str, target: str, ok: bool | None) -> dict[str, object]:
    """One line of the report."""
    return {"figure": figure, "value": value, "target": target, "ok": ok}


ISOLATED = "WORKSHOP_BENCH_ISOLATED"  # set while a bench stack is isolated: a bench inside another reuses it


def isolated_env() -> dict[str, str]:
    """A state folder and ports of its own, so the bench never disturbs a running workshop stack."""
    import socket

    sys.path.insert(0, str(ROOT))
    from helpers.config import Settings

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    env = {"WORKSHOP_STATE_DIR": tempfile.mkdtemp(prefix="workshop-bench-")}
    for field in Settings.model_fields:
        if field.endswith("_port"):
            env[f"WORKSHOP_{field.upper()}"] = str(free())
    return env


@contextmanager
def isolated_stack() -> Iterator[object]:
    """Own state folder and ports while the block runs; then stop everything started in it and restore the settings.

    Nested (a chapter bench run by this file): the outer stack is reused, and only the outermost block stops it.
    Yields the Settings of the isolated stack.
    """
    sys.path.insert(0, str(ROOT))
    from helpers import config
    from helpers.local import stack

    if os.environ.get(ISOLATED):
        yield config.get_settings()
        return
    saved = dict(os.environ)
    os.environ.update(isolated_env())
    os.environ[ISOLATED] = "1"
    settings = config.reload_settings()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    if main_thread:  # `kill` (or a CI timeout): still stop the stack

        def stop_on_sigterm(*_: object) -> None:
            raise SystemExit(143)

        signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        yield settings
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short
        try:
            stack.down()
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(saved)
            config.reload_settings()
            if not leftover_processes(settings.state_dir):
                shutil.rmtree(settings.state_dir, ignore_errors=True)


def leftover_processes(state_dir: Path) -> list[str]:
    """Processes of the stack in this state folder that are still running (by the stack's marker variable)."""
    from helpers.local import records

    found = []
    for proc in records.marked_processes(state_dir, None):
        try:
            found.append(f"pid {proc.pid} {' '.join(proc.cmdline())[:80]}")
        except Exception:  # noqa: BLE001  (gone meanwhile)
            continue
    return found


def bench_stack_up() -> dict[str, object]:
    """Seconds from `python -m helpers.local.stack up model-server` to a healthy server (models cached)."""
    from helpers import config
    from helpers.layers import models
    from helpers.local import stack

    models.fetch(config.get_settings().chat_model)
    start = time.perf_counter()
    stack.ensure("model-server")
    took = time.perf_counter() - start
    return row("stack up -> healthy model server", f"{took:.1f} s", "<= 10 s", took <= 10)


def bench_chat_ratio() -> dict[str, object]:
    """Generation tokens/s through the local server vs llama-cpp-python in-process, same model and threads."""
    from llama_cpp import Llama
    from openai import OpenAI

    from helpers import config
    from helpers.layers import models

    settings = config.get_settings()
    client = OpenAI(base_url=settings.model_server_url, api_key=settings.model_server_api_key.get_secret_value())
    llm = Llama(model_path=str(models.model_path(settings.chat_model)), n_ctx=settings.chat_context,
                n_threads=settings.threads, n_threads_batch=settings.threads, verbose=False)

    def served() -> float:
        start = time.perf_counter()
        r = client.chat.completions.create(model=settings.served_chat_model, messages=PROMPT,
                                           max_tokens=MAX_TOKENS, temperature=0)
        return r.usage.completion_tokens / (time.perf_counter() - start)

    def in_process() -> float:
        llm.reset()
        start = time.perf_counter()
        r = llm.create_chat_completion(messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        return r["usage"]["completion_tokens"] / (time.perf_counter() - start)

    served()
    in_process()  # warm both
    s_rates, p_rates = [], []
    for _ in range(ROUNDS):  # interleaved, so drift in machine load hits both alike
        s_rates.append(served())
        p_rates.append(in_process())
    llm.close()
    s, p = statistics.median(s_rates), statistics.median(p_rates)
    ratio = s / p
    return row("chat tokens/s: server / in-process", f"{s:.1f} / {p:.1f} tok/s = {ratio:.2f}x", ">= 0.90x",
               ratio >= 0.9)


def bench_warm_setup() -> dict[str, object]:
    """Seconds for `make setup` when everything is already cached (the second-run figure)."""
    start = time.perf_counter()
    proc = subprocess.run(["make", "-s", "setup"], cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        return row("warm `make setup`", "failed: " + proc.stderr.strip()[-200:], "<= 120 s", False)
    return row("warm `make setup` (second run)", f"{took:.1f} s", "<= 120 s", took <= 120)


# Every figure, in run order: name -> (module in tools/, function returning a row or rows). The memory and restart
# figures come after the agent's, when the whole stack is up and has served.
BENCHES: dict[str, tuple[str, str]] = {
    "stack-up": ("bench", "bench_stack_up"),
    "chat-ratio": ("bench", "bench_chat_ratio"),
    "chat-bandwidth": ("bench_models", "bench_chat_bandwidth"),
    "embeddings": ("bench_ray", "bench_embeddings_ratio"),
    "batching": ("bench_ray", "bench_batching_demo"),
    "gateway": ("bench_gateway", "bench_gateway"),
    "knowledge": ("bench_knowledge", "bench_ingest"),
    "agent": ("bench_agent", "bench_agent"),
    "memory": ("bench_stack", "bench_memory"),
    "restarts": ("bench_stack", "bench_restarts"),
    "serving": ("bench_serving", "bench_serving"),
    "workshop": ("bench_workshop", "bench_workshop"),
}


def run_benches(names: list[str]) -> list[dict[str, object]]:
    """Rows of the named benches (each module present in tools/), in the table's order."""
    import importlib

    rows: list[dict[str, object]] = []
    for name, (module, func) in BENCHES.items():
        if name not in names or not (ROOT / "tools" / f"{module}.py").exists():
            continue
        result = getattr(importlib.import_module(module), func)()
        rows.extend(result if isinstance(result, list) else [result])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benches in one isolated stack, stop it, check that nothing of it is left, print the report."""
    parser = argparse.ArgumentParser(prog="tools/bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these benches")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools"))
    names = args.only or list(BENCHES)
    with isolated_stack() as settings:
        state_dir = settings.state_dir
        rows = run_benches(names)
    left = leftover_processes(state_dir)
    rows.append(row("processes of the bench's stack left after it", f"{len(left)}" + (f": {left[:3]}" if left else ""),
                    "0", not left))
    if not args.only:
        rows.append(bench_warm_setup())  # `make workshop` / `make test` timings: bench_workshop
    print_rows(rows)
    if not args.only:  # a whole run is kept (with its machine and commit) for the README's table: make bench-readme
        import bench_report

        bench_report.save(rows)
        print(f"\nsaved {bench_report.REPORT.relative_to(ROOT)}; `make bench-readme` puts it into README.md")
    return 0 if not left else 1


def print_rows(rows: list[dict[str, object]]) -> None:
    """The report: one line per figure with its measured value, target and verdict."""
    width = max(len(str(r["figure"])) for r in rows)
    print(f"\n{'figure':{width}}  {'measured':34}  {'target':28}  result")
    for r in rows:
        verdict = {True: "ok", False: "MISSED", None: "info"}[r["ok"]]
        print(f"{r['figure']!s:{width}}  {r['value']!s:34}  {r['target']!s:28}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
