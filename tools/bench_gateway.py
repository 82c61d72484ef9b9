"""Gateway figures (issue 5): overhead direct vs through LiteLLM, cache speed-up, 200 concurrent requests.

Runs its own stack (state folder and ports of its own), so it never disturbs a running workshop:

    .venv/bin/python tools/bench_gateway.py

`bench_gateway()` returns the report rows for tools/bench.py.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench import isolated_env, row  # noqa: E402  (one report format, one way to isolate ports)

REQUESTS = 200
CONCURRENCY = 200
OVERHEAD_TARGET_MS = 15.0
CACHE_TARGET = 5.0
NO_CACHE = {"cache": {"no-cache": True}}
RETRY_STATUSES = (429, 503)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def bench_overhead(direct: Any, through: Any, model: str) -> list[dict[str, object]]:
    """p50/p95 of REQUESTS one-token requests, direct and through the gateway, interleaved (cache off)."""
    from tqdm import tqdm

    reported: list[float] = []  # what LiteLLM itself counts as its overhead (x-litellm-overhead-duration-ms)

    def ask(client: Any, i: int, extra: dict | None = None) -> None:
        raw = client.chat.completions.with_raw_response.create(
            model=model, max_tokens=1, temperature=0, extra_body=extra,
            messages=[{"role": "user", "content": f"Reply with one letter. #{i}"}])
        if "x-litellm-overhead-duration-ms" in raw.headers:
            reported.append(float(raw.headers["x-litellm-overhead-duration-ms"]))

    for i in range(5):  # warm both paths (connections, the proxy's first-call set-up)
        ask(direct, -i)
        ask(through, -i, NO_CACHE)
    d_ms, g_ms = [], []
    for i in tqdm(range(REQUESTS), desc="direct vs gateway", unit="pair"):
        if i % 2:  # alternate who goes first, so llama.cpp's prompt cache favours neither
            d_ms.append(_timed(lambda: ask(direct, i)))
            g_ms.append(_timed(lambda: ask(through, i, NO_CACHE)))
        else:
            g_ms.append(_timed(lambda: ask(through, i, NO_CACHE)))
            d_ms.append(_timed(lambda: ask(direct, i)))
    d50, d95, g50, g95 = percentile(d_ms, 50), percentile(d_ms, 95), percentile(g_ms, 50), percentile(g_ms, 95)
    # the median of per-pair differences: each pair ran back to back, so load from elsewhere hits both alike
    overhead = statistics.median(g - d for g, d in zip(g_ms, d_ms, strict=True))
    return [
        row(f"gateway p50 ({REQUESTS} one-token requests)", f"{g50:.1f} vs {d50:.1f} ms direct = {g50 / d50:.2f}x",
            "overhead <= 15 ms", None),
        row("LiteLLM's own overhead count (p50 of its header)", f"{percentile(reported, 50):.1f} ms", "info", None),
        row("gateway p95", f"{g95:.1f} vs {d95:.1f} ms direct = {g95 / d95:.2f}x", "info", None),
        row("gateway p50 overhead (median of pairs)", f"{overhead:.1f} ms", f"<= {OVERHEAD_TARGET_MS:.0f} ms",
            overhead <= OVERHEAD_TARGET_MS),
    ]


def bench_cache(through: Any, model: str) -> dict[str, object]:
    """One uncached request (a prompt never sent before) and the same request again, served from the cache."""
    ask = {"model": model, "max_tokens": 32, "temperature": 0,
           "messages": [{"role": "user", "content": f"In two sentences, what is a Kubernetes Service? ({time.time()})"}]}
    uncached = _timed(lambda: through.chat.completions.create(**ask))
    cached = statistics.median(_timed(lambda: through.chat.completions.create(**ask)) for _ in range(5))
    ratio = uncached / cached
    return row("cache: repeated request vs uncached", f"{cached:.1f} vs {uncached:.0f} ms = {ratio:.0f}x faster",
               f">= {CACHE_TARGET:.0f}x", ratio >= CACHE_TARGET)


def bench_load(through: Any, model: str) -> dict[str, object]:
    """CONCURRENCY requests at once through the gateway; 429/503 answers are retried by the client, others count as lost."""
    import openai

    def one(i: int) -> tuple[bool, int]:
        retried = 0
        for _attempt in range(10):
            try:
                through.chat.completions.create(model=model, max_tokens=1, temperature=0, extra_body=NO_CACHE,
                                                messages=[{"role": "user", "content": f"Say one word. Load #{i}"}])
                return True, retried
            except openai.APIStatusError as error:
                if error.status_code not in RETRY_STATUSES:
                    return False, retried
                retried += 1
                time.sleep(0.5 * retried)
            except openai.APIConnectionError:
                return False, retried
        return False, retried

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        results = list(pool.map(one, range(CONCURRENCY)))
    took = time.perf_counter() - start
    lost = sum(1 for ok, _ in results if not ok)
    retried = sum(n for _, n in results)
    return row(f"load: {CONCURRENCY} concurrent requests via gateway",
               f"{CONCURRENCY - lost} ok, {lost} lost, {retried} retried (429/503), {took:.1f} s",
               "none lost", lost == 0)


def bench_gateway() -> list[dict[str, object]]:
    """Start an isolated stack with the gateway, measure the three figures, stop everything."""
    os.environ.update(isolated_env())
    sys.path.insert(0, str(ROOT))
    from openai import OpenAI

    from helpers import config
    from helpers.layers import gateway
    from helpers.layers.gateway import local as gateway_local
    from helpers.local import stack
    from helpers.target import Target

    settings = config.reload_settings()
    t = Target("local", settings)
    if not gateway.proxy_installed():
        return [row("gateway figures", f"skipped: create {gateway_local.PROXY_VENV} first "
                    f"({gateway_local.INSTALL_COMMANDS})", "-", None)]
    rows: list[dict[str, object]] = []
    try:
        stack.ensure("gateway")
        model = t.chat.model
        direct = OpenAI(base_url=t.chat.base_url, api_key=t.chat.key(), max_retries=0, timeout=120)
        through = t.gateway.client(max_retries=0, timeout=300)
        rows.append(row("gateway cache backend", gateway.cache_backend(), "redis when installed", None))
        rows += bench_overhead(direct, through, model)
        rows.append(bench_cache(through, model))
        rows.append(bench_load(through, model))
    finally:
        stack.down()
        shutil.rmtree(settings.state_dir, ignore_errors=True)  # the bench's own throw-away state folder
    return rows


def main() -> int:
    """Run the gateway bench alone and print the report."""
    rows = bench_gateway()
    width = max(len(str(r["figure"])) for r in rows)
    print(f"\n{'figure':{width}}  {'measured':46}  {'target':22}  result")
    for r in rows:
        verdict = {True: "ok", False: "MISSED", None: "info"}[r["ok"]]  # type: ignore[index]
        print(f"{r['figure']:{width}}  {r['value']!s:46}  {r['target']!s:22}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
