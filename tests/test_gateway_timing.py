"""helpers.layers.gateway.timing: the gateway's overhead from paired requests on a fake clock, and cache hits read
from the headers LiteLLM really sends (a cached answer names its cache key; tests/test_gateway.py checks that on
the real proxy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from helpers.layers import gateway
from helpers.layers.gateway import timing


@dataclass
class Raw:
    headers: dict[str, str]


class Clock:
    """A fake perf_counter that the fake clients advance."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeEndpoint:
    """An Endpoint-like object whose client takes `ms` per request on the fake clock and records what it was sent."""

    model: str
    ms: list[float]
    clock: Clock
    headers: dict[str, str] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def client(self) -> Any:
        def create(**kwargs: Any) -> Raw:
            self.sent.append(kwargs)
            self.clock.now += self.ms[min(len(self.sent) - 1, len(self.ms) - 1)] / 1000
            return Raw(dict(self.headers))

        return SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(
            with_raw_response=SimpleNamespace(create=create))))


def test_cache_hit_is_read_from_the_cache_key_header() -> None:
    assert timing.cache_hit(Raw({"x-litellm-cache-key": "abc"}))
    assert not timing.cache_hit(Raw({"x-litellm-model-group": "reasoning"}))


def test_response_headers_say_whether_it_was_a_cache_hit() -> None:
    model = gateway.response_headers(Raw({"x-litellm-model-group": "reasoning", "x-litellm-attempted-fallbacks": "0",
                                          "x-litellm-overhead-duration-ms": "7.4", "x-other": "x"}))
    assert model == {"x-litellm-model-group": "reasoning", "x-litellm-attempted-fallbacks": "0",
                     "x-litellm-overhead-duration-ms": "7.4", "x-litellm-cache-hit": "False"}
    assert gateway.response_headers(Raw({"x-litellm-cache-key": "k"}))["x-litellm-cache-hit"] == "True"


def test_overhead_is_the_median_of_paired_differences(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    # the first request of each is the unmeasured warm-up; then 5 measured ones
    direct = FakeEndpoint("reasoning", [500, 80, 80, 90, 80, 80], clock)
    through = FakeEndpoint("reasoning", [900, 95, 92, 300, 91, 96], clock,
                           headers={"x-litellm-overhead-duration-ms": "8.5"})
    result = timing.measure_overhead(through, direct, rounds=5)
    assert [round(r.difference_ms, 6) for r in result.rounds] == [15, 12, 210, 11, 16]
    assert result.median_difference_ms == pytest.approx(15)
    assert result.median_header_ms == pytest.approx(8.5)
    assert result.median_direct_ms == pytest.approx(80)
    assert result.spread_ms() == pytest.approx((11, 210))
    assert result.rows()[2] == {"round": "3", "direct ms": "90.0", "gateway ms": "300.0", "difference ms": "210.0",
                                "LiteLLM's header ms": "8.5"}
    assert all(s["extra_body"] == timing.NO_CACHE and s["max_tokens"] == 1 for s in through.sent)
    assert all("extra_body" not in s for s in direct.sent)
    assert len(direct.sent) == len(through.sent) == 6


def test_a_gateway_without_the_header_gives_no_header_median(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    result = timing.measure_overhead(FakeEndpoint("g", [20], clock, headers={"x-litellm-overhead-duration-ms": "None"}),
                                     FakeEndpoint("d", [10], clock), rounds=3)
    assert result.median_header_ms is None
    assert result.rows()[0]["LiteLLM's header ms"] == ""
    with pytest.raises(ValueError):
        timing.measure_overhead(FakeEndpoint("g", [1], clock), FakeEndpoint("d", [1], clock), rounds=0)
