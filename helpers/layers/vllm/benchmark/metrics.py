"""The metrics of `vllm bench serve`, as pure functions of per-request timing records (no server, no network).

TTFT, ITL, TPOT and E2EL per request, throughput and goodput per run, percentiles by linear interpolation like
numpy.percentile; Poisson arrival times for the request-rate runs.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PERCENTILES: tuple[float, ...] = (50, 90, 99)
METRIC_DEFINITIONS: dict[str, str] = {
    "TTFT": "time from sending the request to the first content token (per request)",
    "ITL": "gap between two consecutive content chunks of one response (all gaps of all requests)",
    "TPOT": "(E2EL - TTFT) / (output tokens - 1), per request with more than one output token",
    "E2EL": "time from sending the request to the end of the response (per request)",
    "output tok/s": "all output tokens / run duration",
    "req/s": "completed requests / run duration",
    "goodput": "requests that met every SLO / run duration",
}


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
