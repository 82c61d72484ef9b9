"""Driving an OpenAI-compatible chat endpoint: streamed requests at a fixed concurrency or at Poisson arrival times,
each one timed chunk by chunk into a RequestRecord; a warm-up request first; every run summarised."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from helpers.config import Settings, get_settings
from helpers.errors import WorkshopError
from helpers.layers.vllm.benchmark.metrics import (
    METRIC_DEFINITIONS,
    SLO,
    RequestRecord,
    RunMetrics,
    poisson_arrivals,
    summarize,
)

if TYPE_CHECKING:
    from helpers.target import Target

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Explain in three sentences what a Kubernetes node pool is.",
    "What does a readiness probe do? Answer briefly.",
    "Give two reasons to put an LLM gateway in front of model servers.",
    "In a few sentences, what is a KV cache in LLM inference?",
    "Why does time to first token grow when many requests arrive at once?",
    "Name three things to check when a pod stays Pending.",
)
INTERRUPTED = "interrupted: the stream ended without a finish_reason"


class BenchmarkError(WorkshopError):
    """The benchmark cannot run as asked; the message says what to change."""


# ---------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint: base URL (ending in /v1), key, served model name, and what it is."""

    name: str
    base_url: str
    model: str
    api_key: str = field(repr=False, default="")

    @property
    def chat_url(self) -> str:
        """The chat completions URL."""
        return self.base_url.rstrip("/") + "/chat/completions"


def local_endpoint(settings: Settings | None = None) -> Endpoint:
    """The local model server (llama.cpp's OpenAI-compatible server, the stand-in for vLLM)."""
    settings = settings or get_settings()
    key = settings.model_server_api_key.get_secret_value() if settings.model_server_api_key else ""
    return Endpoint("local model server (llama.cpp, stand-in for vLLM)", settings.model_server_url,
                    settings.served_chat_model, key)


def gateway_endpoint(t: Target) -> Endpoint:
    """The target's LiteLLM gateway, `reasoning` route (needs the gateway running)."""
    return Endpoint("LiteLLM gateway, route reasoning", t.gateway.base_url, t.gateway.model, t.gateway.key())


# ---------------------------------------------------------------- driving requests


def stream_request(client: Any, endpoint: Endpoint, prompt: str, max_tokens: int, index: int = 0,
                   run_start: float | None = None, temperature: float = 0.0) -> RequestRecord:
    """Send one streaming chat request with an httpx.Client and time every content chunk."""
    body = {"model": endpoint.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": temperature, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    sent = time.perf_counter()
    record = RequestRecord(index=index, start=sent - (run_start if run_start is not None else sent), success=False)
    chunks: list[float] = []
    usage_tokens: int | None = None
    finish: str | None = None
    try:
        with client.stream("POST", endpoint.chat_url, json=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                record.error = f"HTTP {response.status_code}: {response.text[:160]}"
                return record
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                if event.get("usage"):
                    usage_tokens = event["usage"].get("completion_tokens")
                    record.prompt_tokens = event["usage"].get("prompt_tokens")
                for choice in event.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
                        chunks.append(time.perf_counter())
        end = time.perf_counter()
    except Exception as error:  # network errors, timeouts, bad JSON: a failed request, not a crashed run
        record.error = f"{type(error).__name__}: {str(error)[:160]}"
        return record
    if finish is None:  # the stream ended early: the server cut it off
        record.error = INTERRUPTED
        return record
    if not chunks:
        record.error = "no content token in the response"
        return record
    record.success = True
    record.ttft = chunks[0] - sent
    record.latency = end - sent
    record.itl = [b - a for a, b in zip(chunks, chunks[1:])]
    # the server's count when it reports usage in the stream, else one token per content chunk
    record.output_tokens = usage_tokens if usage_tokens else len(chunks)
    return record


def _client(timeout: float, connections: int) -> Any:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(timeout=timeout, limits=limits)


def run_concurrency(endpoint: Endpoint, concurrency: int, num_requests: int, max_tokens: int = 64,
                    prompts: Sequence[str] = DEFAULT_PROMPTS, timeout: float = 300,
                    progress: Callable[[], None] | None = None) -> tuple[list[RequestRecord], float]:
    """`concurrency` clients send `num_requests` in all, each its next one when the last finished; (records, s)."""
    if concurrency < 1 or num_requests < 1:
        raise BenchmarkError("concurrency and number of requests must be at least 1")
    todo: queue.Queue[int] = queue.Queue()
    for i in range(num_requests):
        todo.put(i)
    records: list[RequestRecord] = []
    lock = threading.Lock()
    with _client(timeout, concurrency) as client:
        start = time.perf_counter()

        def worker() -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                rec = stream_request(client, endpoint, prompts[i % len(prompts)], max_tokens, i, start)
                with lock:
                    records.append(rec)
                if progress:
                    progress()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, num_requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        duration = time.perf_counter() - start
    return sorted(records, key=lambda r: r.index), duration


def run_poisson(endpoint: Endpoint, rate: float, num_requests: int, max_tokens: int = 64,
                prompts: Sequence[str] = DEFAULT_PROMPTS, seed: int = 0, timeout: float = 300,
                progress: Callable[[], None] | None = None) -> tuple[list[RequestRecord], float]:
    """Send `num_requests` at Poisson arrival times (`rate` req/s on average), never waiting for answers."""
    arrivals = poisson_arrivals(rate, num_requests, seed)
    records: list[RequestRecord] = []
    lock = threading.Lock()
    with _client(timeout, num_requests) as client:
        start = time.perf_counter()

        def send(i: int) -> None:
            rec = stream_request(client, endpoint, prompts[i % len(prompts)], max_tokens, i, start)
            with lock:
                records.append(rec)
            if progress:
                progress()

        threads = []
        for i, at in enumerate(arrivals):
            delay = start + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t = threading.Thread(target=send, args=(i,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        duration = time.perf_counter() - start
    return sorted(records, key=lambda r: r.index), duration


def warm_up(endpoint: Endpoint, max_tokens: int = 4, timeout: float = 120) -> RequestRecord:
    """One short request first (loads the model, opens connections); raises BenchmarkError if it fails."""
    with _client(timeout, 1) as client:
        for attempt in range(3):  # a shared stand-in cuts a stream when someone else's request waits: retry that
            rec = stream_request(client, endpoint, "Say hello.", max_tokens)
            if rec.success or rec.error != INTERRUPTED:
                break
            time.sleep(2.0 * (attempt + 1))
    if not rec.success:
        raise BenchmarkError(f"The warm-up request to {endpoint.name} at {endpoint.base_url} failed: {rec.error}. "
                             "Check that the server is running (helpers.local.stack status) and the key is right.")
    return rec


@dataclass
class BenchmarkResult:
    """Every run of a benchmark with its raw records, the SLO, and the stamp of where it ran."""

    endpoint: str
    model: str
    max_tokens: int
    slo: SLO
    runs: list[RunMetrics]
    records: dict[str, list[RequestRecord]]
    stamp: dict[str, Any]

    def rows(self) -> list[dict[str, object]]:
        """One table row per run."""
        return [r.row() for r in self.runs]

    def to_json(self) -> dict[str, Any]:
        """Everything as plain JSON-able data (metric definitions included)."""
        return {"endpoint": self.endpoint, "model": self.model, "max_tokens": self.max_tokens,
                "slo": asdict(self.slo), "definitions": METRIC_DEFINITIONS, "stamp": self.stamp,
                "runs": [asdict(r) for r in self.runs],
                "records": {k: [asdict(r) for r in v] for k, v in self.records.items()}}


def benchmark(endpoint: Endpoint, concurrencies: Sequence[int] = (1, 2, 4), requests_per_level: int = 4,
              rates: Sequence[float] = (), poisson_requests: int = 6, max_tokens: int = 48, slo: SLO | None = None,
              prompts: Sequence[str] = DEFAULT_PROMPTS, stamp: dict[str, Any] | None = None, seed: int = 0,
              show_progress: bool = True) -> BenchmarkResult:
    """A concurrency sweep, then a Poisson run per request rate, against one endpoint (after one warm-up request)."""
    from tqdm import tqdm

    slo = slo or SLO()
    warm_up(endpoint)
    total = requests_per_level * len(concurrencies) + poisson_requests * len(rates)
    bar = tqdm(total=total, desc="requests", unit="req", disable=not show_progress)
    runs: list[RunMetrics] = []
    raw: dict[str, list[RequestRecord]] = {}
    try:
        for c in concurrencies:
            records, took = run_concurrency(endpoint, c, requests_per_level, max_tokens, prompts, progress=bar.update)
            runs.append(summarize(records, took, slo, f"concurrency {c}", "concurrency", c))
            raw[runs[-1].label] = records
        for rate in rates:
            records, took = run_poisson(endpoint, rate, poisson_requests, max_tokens, prompts, seed,
                                        progress=bar.update)
            runs.append(summarize(records, took, slo, f"poisson {rate:g} req/s", "poisson", rate))
            raw[runs[-1].label] = records
    finally:
        bar.close()
    return BenchmarkResult(endpoint.name, endpoint.model, max_tokens, slo, runs, raw, stamp or {})
