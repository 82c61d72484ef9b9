"""The serving benchmark: metric definitions on synthetic timing records, then one small real run."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from helpers.config import Settings
from helpers.layers.vllm import benchmark as sb
from helpers.local import stack
from helpers.target import Target


def rec(i: int, start: float, ttft: float, gaps: list[float], success: bool = True, tokens: int | None = None
        ) -> sb.RequestRecord:
    """A successful request whose tokens arrived at ttft, then after each gap; E2EL ends at the last token."""
    latency = ttft + sum(gaps)
    return sb.RequestRecord(index=i, start=start, success=success, ttft=ttft, latency=latency, itl=list(gaps),
                            output_tokens=tokens if tokens is not None else len(gaps) + 1)


def test_percentile_matches_linear_interpolation() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # sorted 1, 2, 3, 4
    assert sb.percentile(values, 50) == pytest.approx(2.5)
    assert sb.percentile(values, 90) == pytest.approx(3.7)
    assert sb.percentile(values, 99) == pytest.approx(3.97)
    assert sb.percentile(values, 0) == 1.0 and sb.percentile(values, 100) == 4.0
    assert sb.percentile([7.0], 99) == 7.0
    assert math.isnan(sb.percentile([], 50))
    with pytest.raises(ValueError):
        sb.percentile(values, 101)


def test_tpot_is_decode_time_over_tokens_after_the_first() -> None:
    r = rec(0, 0.0, 0.5, [0.1, 0.1, 0.1, 0.1])  # 5 tokens, E2EL 0.9
    assert r.latency == pytest.approx(0.9)
    assert r.tpot == pytest.approx((0.9 - 0.5) / 4)
    assert rec(1, 0.0, 0.3, []).tpot is None  # one token: no TPOT
    assert sb.RequestRecord(2, 0.0, success=False, error="boom").tpot is None
    # the server's token count wins over the number of chunks (two tokens may share a chunk)
    assert rec(3, 0.0, 0.5, [0.2, 0.2], tokens=5).tpot == pytest.approx(0.4 / 4)


def test_summarize_computes_vllm_metrics() -> None:
    records = [
        rec(0, 0.0, 0.2, [0.05] * 9),   # 10 tokens, E2EL 0.65, TPOT 0.05
        rec(1, 0.1, 0.4, [0.10] * 4),   # 5 tokens, E2EL 0.8, TPOT 0.1
        rec(2, 0.5, 1.5, [0.02] * 1),   # 2 tokens, E2EL 1.52, TPOT 0.02
        sb.RequestRecord(3, 0.6, success=False, error="HTTP 503: busy"),
    ]
    slo = sb.SLO(ttft_ms=500, tpot_ms=60)
    m = sb.summarize(records, duration_s=2.0, slo=slo, label="c2", load=2)
    assert (m.requests, m.completed, m.failed) == (4, 3, 1)
    assert m.total_output_tokens == 17
    assert m.output_throughput == pytest.approx(17 / 2.0)
    assert m.request_throughput == pytest.approx(3 / 2.0)
    # only request 0 meets both TTFT <= 500 ms and TPOT <= 60 ms
    assert m.request_goodput == pytest.approx(1 / 2.0)
    assert m.good_share == pytest.approx(1 / 4)
    assert m.ttft_ms["p50"] == pytest.approx(400)
    assert m.ttft_ms["mean"] == pytest.approx((200 + 400 + 1500) / 3)
    assert m.tpot_ms["p50"] == pytest.approx(50)
    assert m.e2el_ms["p99"] == pytest.approx(sb.percentile([650, 800, 1520], 99))
    # ITL pools every gap of every request: 9 + 4 + 1 = 14 gaps
    gaps = [50] * 9 + [100] * 4 + [20]
    assert m.itl_ms["p90"] == pytest.approx(sb.percentile(gaps, 90))
    assert m.peak_concurrency == 3  # 0, 1 and 2 overlap at t = 0.5
    assert m.errors == ["HTTP 503: busy"]
    row = m.row()
    assert row["ok/sent"] == "3/4" and "TTFT p99 ms" in row and "goodput req/s" in row


def test_slo_counts_single_token_tpot_as_zero_and_failures_as_bad() -> None:
    one_token = rec(0, 0.0, 0.1, [])
    assert sb.SLO(tpot_ms=1).met_by(one_token)
    assert not sb.SLO(ttft_ms=50).met_by(one_token)
    assert not sb.SLO().met_by(sb.RequestRecord(1, 0.0, success=False))
    assert sb.SLO().met_by(one_token)
    assert str(sb.SLO(ttft_ms=500, e2el_ms=2000)) == "TTFT <= 500 ms, E2EL <= 2000 ms"


def test_summarize_rejects_a_non_positive_duration() -> None:
    with pytest.raises(ValueError):
        sb.summarize([rec(0, 0, 0.1, [])], 0)


def test_poisson_arrivals_have_the_requested_mean_rate_and_are_reproducible() -> None:
    times = sb.poisson_arrivals(4.0, 4000, seed=1)
    assert times[0] == 0.0 and times == sorted(times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(0.25, rel=0.05)
    # exponential gaps: standard deviation close to the mean (coefficient of variation ~1)
    mean = sum(gaps) / len(gaps)
    sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert sd / mean == pytest.approx(1.0, rel=0.1)
    assert sb.poisson_arrivals(4.0, 10, seed=1) == times[:10]
    with pytest.raises(ValueError):
        sb.poisson_arrivals(0, 3)


def test_cost_per_million_output_tokens() -> None:
    # $3.60/h at 1000 tok/s = 3.6M tokens per hour -> $1 per million
    assert sb.cost_per_million_output_tokens(Decimal("3.60"), 1000) == Decimal("1.0000")
    assert sb.cost_per_million_output_tokens(Decimal("0.1008"), 20) == Decimal("1.4000")
    with pytest.raises(ValueError):
        sb.cost_per_million_output_tokens(1, 0)


def test_prices_come_from_the_price_table_and_the_scheduling_model() -> None:
    assert sb.instance_price(sb.ASSUMED_LOCAL_INSTANCE) > 0
    instance, price = sb.vllm_node(Target("eks", Settings(_env_file=None)))
    assert instance.startswith("g") and price == sb.instance_price(instance)
    with pytest.raises(sb.BenchmarkError, match="price table"):
        sb.instance_price("no.such")


@pytest.mark.services
def test_a_small_real_run_against_the_isolated_model_server(isolated_settings, tmp_path) -> None:
    stack.ensure("model-server")
    try:
        endpoint = sb.local_endpoint(isolated_settings)
        stamp = sb.environment_stamp(endpoint, isolated_settings, "m7i.large", Decimal("0.1008"))
        result = sb.benchmark(endpoint, concurrencies=(1, 2), requests_per_level=2, rates=(2.0,),
                              poisson_requests=2, max_tokens=8, slo=sb.SLO(ttft_ms=60_000), stamp=stamp,
                              show_progress=False)
    finally:
        stack.down()
    assert [r.label for r in result.runs] == ["concurrency 1", "concurrency 2", "poisson 2 req/s"]
    one_at_a_time = result.runs[0]
    assert one_at_a_time.completed == one_at_a_time.requests == 2, one_at_a_time.errors
    for run in result.runs:
        assert run.completed + run.failed == run.requests == 2
        # llama-cpp-python's server (interrupt_requests on by default) may cut a stream when another request
        # waits: such a request counts as failed, never as a fast one
        assert set(run.errors) <= {sb.INTERRUPTED}, run.errors
        assert run.completed >= 1 and run.total_output_tokens >= 1 and run.output_throughput > 0
        assert run.ttft_ms["p50"] > 0 and run.e2el_ms["p99"] >= run.ttft_ms["p99"]
    for records in result.records.values():
        for r in records:
            assert (1 <= r.output_tokens <= 8 and r.latency >= r.ttft) if r.success else r.output_tokens == 0
    path = sb.save(result, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["stamp"]["versions"]["llama-cpp-python"] and saved["stamp"]["hardware"]["logical_cpus"]
    assert saved["stamp"]["model"]["registry_file"] == isolated_settings.chat_model
    assert set(saved["definitions"]) >= {"TTFT", "ITL", "TPOT", "E2EL", "goodput"}
    assert isolated_settings.model_server_api_key.get_secret_value() not in path.read_text()  # no key in the file
    fig = sb.plot(result.runs)
    assert len(fig.axes) == 2
