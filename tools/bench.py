"""`make bench`: measure the figures the issues name, each beside its baseline from the same run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ROOT / "build" / "timings.jsonl"
PROMPT = [{"role": "user", "content": "Explain in detail how a Kubernetes scheduler places a pod on a node."}]
MAX_TOKENS = 96
ROUNDS = 3


def row(figure: str, value: str, target: str, ok: bool | None) -> dict[str, object]:
    """One line of the report."""
    return {"figure": figure, "value": value, "target": target, "ok": ok}


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


def recorded_workshop_runs() -> list[dict[str, object]]:
    """The last fresh `make workshop` run recorded on this machine, if any."""
    if not TIMINGS.exists():
        return [row("fresh `make workshop` (setup incl. model build)", "not recorded on this machine yet",
                    "<= 900 s", None)]
    runs = [json.loads(line) for line in TIMINGS.read_text().splitlines() if line.strip()]
    last = runs[-1]
    return [row("last `make workshop`: set-up part", f"{last['setup_s']} s", "<= 900 s fresh / <= 120 s warm", None),
            row("last `make workshop`: total", f"{last['total_s']} s", "notebooks <= 600 s (issue 7)", None)]


# Each chapter's figures live beside their topic: (module in tools/, function returning a row or rows).
CHAPTER_BENCHES: list[tuple[str, str]] = [
    ("bench_models", "bench_chat_bandwidth"),
    ("bench_ray", "bench_embeddings_ratio"),
    ("bench_gateway", "bench_gateway"),
    ("bench_knowledge", "bench_ingest"),
    ("bench_agent", "bench_agent"),
    ("bench_serving", "bench_serving"),
    ("bench_workshop", "bench_workshop"),
]


def chapter_rows() -> list[dict[str, object]]:
    """Rows from every chapter bench present in tools/."""
    import importlib

    rows: list[dict[str, object]] = []
    for module, func in CHAPTER_BENCHES:
        if not (ROOT / "tools" / f"{module}.py").exists():
            continue
        result = getattr(importlib.import_module(module), func)()
        rows.extend(result if isinstance(result, list) else [result])
    return rows


def main() -> int:
    """Run every bench in an isolated stack and print the report."""
    os.environ.update(isolated_env())
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools"))
    from helpers.local import stack

    rows = []
    try:
        rows.append(bench_stack_up())
        rows.append(bench_chat_ratio())
        rows.extend(chapter_rows())
    finally:
        stack.down()
    rows.append(bench_warm_setup())
    rows.extend(recorded_workshop_runs())
    print_rows(rows)
    return 0


def print_rows(rows: list[dict[str, object]]) -> None:
    """The report: one line per figure with its measured value, target and verdict."""
    width = max(len(str(r["figure"])) for r in rows)
    print(f"\n{'figure':{width}}  {'measured':34}  {'target':28}  result")
    for r in rows:
        verdict = {True: "ok", False: "MISSED", None: "info"}[r["ok"]]
        print(f"{r['figure']!s:{width}}  {r['value']!s:34}  {r['target']!s:28}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
