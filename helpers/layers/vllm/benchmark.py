"""A serving benchmark for any OpenAI-compatible chat endpoint, with the metric definitions of `vllm bench serve`.

It drives the local model server (the llama.cpp stand-in), the LiteLLM gateway, or vLLM on EKS with
streaming chat requests and records, per request, when it was sent, when each token arrived and how
many tokens came back. From those records (pure functions, tested on synthetic timings):

- **TTFT** (time to first token): send -> first content token, per request.
- **ITL** (inter-token latency): every gap between two consecutive content chunks, pooled over requests.
- **TPOT** (time per output token): (E2EL - TTFT) / (output tokens - 1), per request with > 1 token.
- **E2EL** (end-to-end latency): send -> last byte of the response, per request.
- **throughput**: completed requests / run duration (req/s) and output tokens / run duration (tok/s).
- **goodput**: requests per second that met every SLO (TTFT, TPOT, E2EL thresholds); a request with one
  output token counts TPOT as 0, as vLLM does.

These follow `calculate_metrics` in vllm/benchmarks/serve.py (`vllm bench serve`), percentiles by
linear interpolation like numpy.percentile. Two load shapes: a fixed concurrency (N clients, each
sending its next request when the last one finished) and a Poisson process at a request rate
(exponential gaps between arrivals, as `vllm bench serve --request-rate` with burstiness 1).
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from helpers.errors import WorkshopError
from helpers.config import ROOT, Settings, get_settings

PERCENTILES: tuple[float, ...] = (50, 90, 99)
RESULTS_DIR = ROOT / "build" / "benchmarks"  # git-ignored
# The instance the local figure is priced as: 2 vCPUs of x86, like the 2 cores this workshop is measured on.
ASSUMED_LOCAL_INSTANCE = "m7i.large"
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Explain in three sentences what a Kubernetes node pool is.",
    "What does a readiness probe do? Answer briefly.",
    "Give two reasons to put an LLM gateway in front of model servers.",
    "In a few sentences, what is a KV cache in LLM inference?",
    "Why does time to first token grow when many requests arrive at once?",
    "Name three things to check when a pod stays Pending.",
)
METRIC_DEFINITIONS: dict[str, str] = {
    "TTFT": "time from sending the request to the first content token (per request)",
    "ITL": "gap between two consecutive content chunks of one response (all gaps of all requests)",
    "TPOT": "(E2EL - TTFT) / (output tokens - 1), per request with more than one output token",
    "E2EL": "time from sending the request to the end of the response (per request)",
    "output tok/s": "all output tokens / run duration",
    "req/s": "completed requests / run duration",
    "goodput": "requests that met every SLO / run duration",
}


INTERRUPTED = "interrupted: the stream ended without a finish_reason"


class BenchmarkError(WorkshopError):
    """The benchmark cannot run as asked; the message says what to change."""


# ---------------------------------------------------------------- records and metrics (pure)


@dataclass
class RequestRecord:
    """What one streamed request did; times in seconds, `start` relative to the start of its run."""

    index: int
    start: float
    success: bool
    ttft: float | None = None
    latency: float | None = None  # E2EL
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    error: str = ""

    @property
    def tpot(self) -> float | None:
        """(E2EL - TTFT) / (output tokens - 1); None unless the request succeeded with more than one token."""
        if not self.success or self.latency is None or self.ttft is None or self.output_tokens <= 1:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


@dataclass(frozen=True)
class SLO:
    """Service-level objectives a request must meet to count towards goodput (milliseconds; None: no limit)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        """Whether a successful request met every objective (TPOT counts as 0 for single-token answers)."""
        if not record.success:
            return False
        checks = [
            (self.ttft_ms, record.ttft),
            (self.tpot_ms, record.tpot if record.tpot is not None else 0.0),
            (self.e2el_ms, record.latency),
        ]
        return all(limit is None or (value is not None and value * 1000 <= limit) for limit, value in checks)

    def __str__(self) -> str:
        parts = [f"{name} <= {v:g} ms" for name, v in (("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms),
                                                         ("E2EL", self.e2el_ms)) if v is not None]
        return ", ".join(parts) or "no SLO"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy.percentile's default)."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def distribution_ms(values_s: Sequence[float], percentiles: Iterable[float] = PERCENTILES) -> dict[str, float]:
    """Mean and percentiles of durations given in seconds, in milliseconds (NaN when there are none)."""
    ms = [v * 1000 for v in values_s]
    out = {"mean": statistics.fmean(ms) if ms else math.nan}
    out.update({f"p{q:g}": percentile(ms, q) for q in percentiles})
    return out


def peak_concurrency(records: Iterable[RequestRecord]) -> int:
    """The most requests in flight at once (half-open intervals [start, start + E2EL))."""
    events = []
    for r in records:
        if r.success and r.latency is not None:
            events += [(r.start, 1), (r.start + r.latency, -1)]
    current = peak = 0
    for _, delta in sorted(events):
        current += delta
        peak = max(peak, current)
    return peak


@dataclass
class RunMetrics:
    """The summary of one run (one concurrency level or one request rate)."""

    label: str
    mode: str  # "concurrency" or "poisson"
    load: float  # the concurrency, or the request rate in req/s
    requests: int
    completed: int
    failed: int
    duration_s: float
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    request_goodput: float
    good_share: float
    slo: str
    peak_concurrency: int
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2el_ms: dict[str, float]
    errors: list[str] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        """A flat table row: load, throughput, goodput and the p50/p90/p99 of every latency metric."""
        row: dict[str, object] = {"run": self.label, "ok/sent": f"{self.completed}/{self.requests}",
                                  "req/s": round(self.request_throughput, 3),
                                  "output tok/s": round(self.output_throughput, 1),
                                  "goodput req/s": round(self.request_goodput, 3)}
        for name, dist in (("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("ITL", self.itl_ms),
                           ("E2EL", self.e2el_ms)):
            for key in ("p50", "p90", "p99"):
                if key in dist:
                    row[f"{name} {key} ms"] = round(dist[key], 1)
        return row


def summarize(records: Sequence[RequestRecord], duration_s: float, slo: SLO | None = None, label: str = "",
              mode: str = "concurrency", load: float = 1, percentiles: Iterable[float] = PERCENTILES) -> RunMetrics:
    """The metrics of one run from its per-request records, as `vllm bench serve` defines them."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, not {duration_s}")
    percentiles = tuple(percentiles)
    slo = slo or SLO()
    ok = [r for r in records if r.success]
    failed = [r for r in records if not r.success]
    output = sum(r.output_tokens for r in ok)
    good = sum(1 for r in ok if slo.met_by(r))
    tpots = [t for r in ok if (t := r.tpot) is not None]
    return RunMetrics(
        label=label or f"{mode} {load:g}",
        mode=mode,
        load=load,
        requests=len(records),
        completed=len(ok),
        failed=len(failed),
        duration_s=duration_s,
        total_output_tokens=output,
        request_throughput=len(ok) / duration_s,
        output_throughput=output / duration_s,
        request_goodput=good / duration_s,
        good_share=good / len(records) if records else math.nan,
        slo=str(slo),
        peak_concurrency=peak_concurrency(ok),
        ttft_ms=distribution_ms([r.ttft for r in ok if r.ttft is not None], percentiles),
        tpot_ms=distribution_ms(tpots, percentiles),
        itl_ms=distribution_ms([gap for r in ok for gap in r.itl], percentiles),
        e2el_ms=distribution_ms([r.latency for r in ok if r.latency is not None], percentiles),
        errors=sorted({r.error for r in failed})[:5],
    )


def poisson_arrivals(rate: float, count: int, seed: int = 0, burstiness: float = 1.0) -> list[float]:
    """Arrival times (s from the start) of `count` requests at `rate` req/s: gamma gaps (exponential at burstiness 1)."""
    if rate <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be positive")
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)  # mean gap = shape * scale = 1 / rate
    t, times = 0.0, []
    for _ in range(count):
        times.append(t)
        t += rng.gammavariate(burstiness, theta)
    return times


def cost_per_million_output_tokens(hourly_usd: Decimal | float, output_tokens_per_s: float) -> Decimal:
    """USD per 1M output tokens when a node costing `hourly_usd` streams `output_tokens_per_s` all hour."""
    if output_tokens_per_s <= 0:
        raise ValueError("output tokens/s must be positive to price a token")
    per_hour = Decimal(str(output_tokens_per_s)) * 3600
    return (Decimal(str(hourly_usd)) / per_hour * 1_000_000).quantize(Decimal("0.0001"))


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


def gateway_endpoint(settings: Settings | None = None) -> Endpoint:
    """The LiteLLM gateway's `reasoning` route (needs the gateway running)."""
    from helpers.layers import gateway

    settings = settings or get_settings()
    return Endpoint("LiteLLM gateway, route reasoning", gateway.gateway_url(settings), settings.served_chat_model,
                    gateway.master_key(settings))


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


# ---------------------------------------------------------------- where it ran, what it costs, saving, plotting


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment_stamp(endpoint: Endpoint, settings: Settings | None = None, instance_type: str | None = None,
                      hourly_usd: Decimal | None = None) -> dict[str, Any]:
    """Hardware, model, software versions and the priced instance: what a result must carry to be compared."""
    import psutil

    settings = settings or get_settings()
    model_file = None
    if endpoint.model == settings.served_chat_model and endpoint.base_url == settings.model_server_url:
        model_file = settings.chat_model
    return {
        "when_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "hardware": {"machine": platform.machine(), "cpu": _cpu_model(), "logical_cpus": os.cpu_count(),
                     "usable_cpus": settings.threads, "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                     "system": f"{platform.system()} {platform.release()}"},
        "model": {"served_name": endpoint.model, "registry_file": model_file, "threads": settings.threads},
        "endpoint": {"name": endpoint.name, "base_url": endpoint.base_url},
        "versions": {"python": platform.python_version(),
                     **{p: _version(p) for p in ("llama-cpp-python", "httpx", "openai", "vllm", "litellm")}},
        "priced_as": {"instance_type": instance_type, "usd_per_hour": str(hourly_usd) if hourly_usd else None},
    }


def instance_price(instance_type: str) -> Decimal:
    """On-demand USD per hour of an instance type from the committed price table (helpers/data/ec2_prices.csv)."""
    from helpers.infra.aws import load_instance_types

    table = load_instance_types()
    if instance_type not in table:
        raise BenchmarkError(f"{instance_type} is not in the price table; pick one of: {', '.join(sorted(table))}")
    return table[instance_type].price_usd_per_hour


def vllm_node(workload: str = "vllm-reasoning") -> tuple[str, Decimal]:
    """The instance type (and hourly price) the scheduling model puts vLLM's reasoning server on in eks."""
    from helpers.infra import scheduling

    for part in scheduling.platform_cost().parts:
        if workload in part.hosts or any(h.startswith(f"{workload} ") for h in part.hosts):
            return part.instance_type, part.unit_price
    raise BenchmarkError(f"no node of the cost plan hosts {workload}")


def save(result: BenchmarkResult, directory: Path | str = RESULTS_DIR, name: str | None = None) -> Path:
    """Write the result as JSON under build/benchmarks/ (git-ignored) and return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / (name or f"serving-{stamp}.json")
    path.write_text(json.dumps(result.to_json(), indent=1, default=str))
    return path


def load(path: Path | str) -> dict[str, Any]:
    """A saved result as plain data."""
    return json.loads(Path(path).read_text())


def plot(runs: Sequence[RunMetrics], title: str = "") -> Any:
    """Latency against throughput: TTFT and TPOT (p50 and p99) over output tok/s, one point per run."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (metric, unit) in zip(axes, (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")), strict=True):
        for mode, marker in (("concurrency", "o"), ("poisson", "s")):
            chosen = [r for r in runs if r.mode == mode]
            if not chosen:
                continue
            xs = [r.output_throughput for r in chosen]
            for key, style in (("p50", "-"), ("p99", "--")):
                ax.plot(xs, [getattr(r, metric)[key] for r in chosen], style, marker=marker,
                        label=f"{unit} {key} ({mode})")
            for r, x in zip(chosen, xs, strict=True):
                ax.annotate(f"{'c' if mode == 'concurrency' else 'λ'}={r.load:g}", (x, getattr(r, metric)["p50"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("output tokens/s (whole server)")
        ax.set_ylabel(f"{unit} (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Latency vs throughput")
    fig.tight_layout()
    return fig
