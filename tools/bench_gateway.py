"""Gateway figures (issue 5): overhead direct vs through LiteLLM, cache speed-up, 200 concurrent requests.

Runs its own stack (state folder and ports of its own), so it never disturbs a running workshop:

    .venv/bin/python tools/bench_gateway.py

`bench_gateway()` returns the report rows for tools/bench.py.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench import isolated_stack, print_rows, row  # noqa: E402  (one report format, one way to isolate a stack)

REQUESTS = 200
FIRST_ROUNDS = 3  # gateway starts whose first request is measured
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


def prompt(side: str, i: object) -> list[dict[str, str]]:
    """A one-letter request whose text differs between the two sides from its first token on.

    llama.cpp keeps the previous prompt's state: with the same text on both sides, the second request of a pair
    would skip most of its prefill and look faster (by tens of ms here, seconds on a loaded machine). Texts that
    differ from the start, of equal length, cost both sides the same prefill.
    """
    return [{"role": "user", "content": f"{side}{i}: reply with one letter."}]


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
            model=model, max_tokens=1, temperature=0, extra_body=extra, messages=prompt("G" if extra else "D", i))
        if "x-litellm-overhead-duration-ms" in raw.headers:
            reported.append(float(raw.headers["x-litellm-overhead-duration-ms"]))

    for i in range(5):  # warm both clients' connections (the proxy itself is warmed by the stack at start)
        ask(direct, -i)
        ask(through, -i, NO_CACHE)
    d_ms, g_ms = [], []
    for i in tqdm(range(REQUESTS), desc="direct vs gateway", unit="pair"):
        if i % 2:  # alternate who goes first as well, so drift in load favours neither
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


def bench_first_requests(t: Any, model: str, restarts: int = FIRST_ROUNDS) -> list[dict[str, object]]:
    """First-request overhead after a gateway start, with the stack's warm-up and (the baseline) without it."""
    import dataclasses

    from helpers.local import stack

    with_warm_up = stack.SERVICES["gateway"]
    stack.SERVICES["gateway"] = dataclasses.replace(with_warm_up, warm_up=None)
    try:
        cold = first_requests(t, model, restarts)
    finally:
        stack.SERVICES["gateway"] = with_warm_up
    warm = first_requests(t, model, restarts)
    return [row(f"gateway first-request overhead after a start (median of {restarts} starts)",
                f"{warm[0]:.1f} ms ({', '.join(f'{x:.0f}' for x in warm[1])})", f"<= {OVERHEAD_TARGET_MS:.0f} ms",
                warm[0] <= OVERHEAD_TARGET_MS),
            row("  LiteLLM's own count for those first requests (its header)",
                ", ".join(f"{x:.0f} ms" for x in warm[2]), "info", None),
            row("  the same without the stack's warm-up (before issue 13)",
                f"{cold[0]:.1f} ms; header {', '.join(f'{x:.0f}' for x in cold[2])} ms", "baseline", None)]


def first_requests(t: Any, model: str, restarts: int) -> tuple[float, list[float], list[float]]:
    """The gateway restarted `restarts` times; each start's first request paired with a direct one.

    Returns the median of the pairs' differences, the differences, and LiteLLM's own overhead header for them.
    """
    from openai import OpenAI

    from helpers.local import stack

    firsts: list[float] = []
    reported: list[float] = []
    for n in range(restarts):
        stack.stop("gateway")
        stack.ensure("gateway")
        direct = OpenAI(base_url=t.chat.base_url, api_key=t.chat.key(), max_retries=0, timeout=120)
        through = t.gateway.client(max_retries=0, timeout=300)
        # no request before the pair (even /v1/models would do part of the proxy's first-use work): both sides
        # open their connection within the pair, which costs a fraction of a millisecond on loopback

        def ask(client: Any, extra: dict | None = None) -> None:
            raw = client.chat.completions.with_raw_response.create(
                model=model, max_tokens=1, temperature=0, extra_body=extra, messages=prompt("G" if extra else "D", n))
            if "x-litellm-overhead-duration-ms" in raw.headers:
                reported.append(float(raw.headers["x-litellm-overhead-duration-ms"]))

        if n % 2:
            d = _timed(lambda: ask(direct))
            g = _timed(lambda: ask(through, NO_CACHE))
        else:
            g = _timed(lambda: ask(through, NO_CACHE))
            d = _timed(lambda: ask(direct))
        firsts.append(g - d)
    return statistics.median(firsts), firsts, reported


def bench_gateway() -> list[dict[str, object]]:
    """The gateway figures on the bench's isolated stack (its own, when run alone)."""
    sys.path.insert(0, str(ROOT))
    from openai import OpenAI

    from helpers.layers import gateway
    from helpers.layers.gateway import local as gateway_local
    from helpers.local import stack
    from helpers.target import Target

    if not gateway.proxy_installed():
        return [row("gateway figures", f"skipped: create {gateway_local.PROXY_VENV} first "
                    f"({gateway_local.INSTALL_COMMANDS})", "-", None)]
    rows: list[dict[str, object]] = []
    with isolated_stack() as settings:
        t = Target("local", settings)
        model = t.chat.model
        rows += bench_first_requests(t, model)
        stack.ensure("gateway")
        direct = OpenAI(base_url=t.chat.base_url, api_key=t.chat.key(), max_retries=0, timeout=120)
        through = t.gateway.client(max_retries=0, timeout=300)
        rows.append(row("gateway cache backend", gateway.cache_backend(), "redis when installed", None))
        rows += bench_overhead(direct, through, model)
        rows.append(bench_cache(through, model))
        rows.append(bench_load(through, model))
    return rows


def main() -> int:
    """Run the gateway bench alone and print the report."""
    print_rows(bench_gateway())
    return 0


if __name__ == "__main__":
    sys.exit(main())
