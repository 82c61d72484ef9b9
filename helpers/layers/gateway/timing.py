"""What a request through the gateway costs, measured: the gateway's own overhead (paired requests, straight to
the model server and through the gateway, in alternating order) and whether an answer came from the cache.

LiteLLM reports its overhead in the `x-litellm-overhead-duration-ms` header, and a cached answer by carrying the
cache key (`x-litellm-cache-key`) it was found under; an answer from the model has no cache key.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

CACHE_KEY_HEADER = "x-litellm-cache-key"
OVERHEAD_HEADER = "x-litellm-overhead-duration-ms"
NO_CACHE = {"cache": {"no-cache": True, "no-store": True}}  # neither read nor write the response cache


def cache_hit(raw: Any) -> bool:
    """Whether the gateway answered a raw response from its cache (it then names the cache key it used)."""
    return CACHE_KEY_HEADER in raw.headers


@dataclass(frozen=True)
class PairedRound:
    """One round: the same request straight to the model server and through the gateway (milliseconds)."""

    direct_ms: float
    gateway_ms: float
    header_ms: float | None  # what LiteLLM itself reported as its overhead

    @property
    def difference_ms(self) -> float:
        """What going through the gateway added in this round."""
        return self.gateway_ms - self.direct_ms


@dataclass(frozen=True)
class Overhead:
    """Paired rounds and their medians: the gateway's overhead as a client sees it, and as LiteLLM reports it."""

    rounds: tuple[PairedRound, ...]

    @property
    def median_difference_ms(self) -> float:
        """The median of gateway minus direct over the rounds."""
        return statistics.median(r.difference_ms for r in self.rounds)

    @property
    def median_header_ms(self) -> float | None:
        """The median of LiteLLM's own overhead header (None when it sent none)."""
        values = [r.header_ms for r in self.rounds if r.header_ms is not None]
        return statistics.median(values) if values else None

    @property
    def median_direct_ms(self) -> float:
        """The median time of the request straight to the model server."""
        return statistics.median(r.direct_ms for r in self.rounds)

    def spread_ms(self) -> tuple[float, float]:
        """The smallest and the largest difference: how much one round can say."""
        differences = [r.difference_ms for r in self.rounds]
        return min(differences), max(differences)

    def rows(self) -> list[dict[str, str]]:
        """One table row per round, numbers formatted."""
        return [{"round": str(i + 1), "direct ms": f"{r.direct_ms:.1f}", "gateway ms": f"{r.gateway_ms:.1f}",
                 "difference ms": f"{r.difference_ms:.1f}",
                 "LiteLLM's header ms": "" if r.header_ms is None else f"{r.header_ms:.1f}"}
                for i, r in enumerate(self.rounds)]


def _timed(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    raw = call()
    return (time.perf_counter() - start) * 1000, raw


def header_ms(raw: Any) -> float | None:
    """LiteLLM's `x-litellm-overhead-duration-ms` of a raw response, as a number (None when absent)."""
    value = raw.headers.get(OVERHEAD_HEADER)
    try:
        return float(value) if value not in (None, "", "None") else None
    except ValueError:
        return None


def measure_overhead(gateway: Any, direct: Any, rounds: int = 7, prompt: str = "Say OK.") -> Overhead:
    """Time `rounds` pairs of the same 1-token request: to `direct` (the model server) and through `gateway` (its
    cache bypassed), alternating which goes first so that a drift of the machine's speed cancels out.

    `gateway` and `direct` are helpers.target.Endpoint objects (their client, key and model are used)."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    messages = [{"role": "user", "content": prompt}]
    gateway_client, direct_client = gateway.client(), direct.client()

    def via_gateway() -> Any:
        return gateway_client.chat.completions.with_raw_response.create(
            model=gateway.model, messages=messages, max_tokens=1, temperature=0, extra_body=NO_CACHE)

    def straight() -> Any:
        return direct_client.chat.completions.with_raw_response.create(
            model=direct.model, messages=messages, max_tokens=1, temperature=0)

    straight()
    via_gateway()  # one unmeasured pair: connections opened, the model's prompt cache holds the prompt
    measured = []
    for i in range(rounds):
        if i % 2 == 0:
            direct_ms, _ = _timed(straight)
            gateway_ms, raw = _timed(via_gateway)
        else:
            gateway_ms, raw = _timed(via_gateway)
            direct_ms, _ = _timed(straight)
        measured.append(PairedRound(direct_ms, gateway_ms, header_ms(raw)))
    return Overhead(tuple(measured))
