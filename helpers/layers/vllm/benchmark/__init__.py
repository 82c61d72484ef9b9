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

    metrics   the definitions above as pure functions of timing records; Poisson arrivals
    driver    endpoints, streamed requests at a concurrency or a rate, the warm-up, a whole benchmark
    report    where it ran (the stamp), what it costs (price table, scheduling model), save, load, plot
"""

from __future__ import annotations

from helpers.layers.vllm.benchmark.metrics import (  # noqa: F401 - the public surface of the package
    METRIC_DEFINITIONS,
    PERCENTILES,
    SLO,
    RequestRecord,
    RunMetrics,
    distribution_ms,
    peak_concurrency,
    percentile,
    poisson_arrivals,
    summarize,
)
from helpers.layers.vllm.benchmark.driver import (  # noqa: F401 - the public surface of the package
    DEFAULT_PROMPTS,
    INTERRUPTED,
    BenchmarkError,
    BenchmarkResult,
    Endpoint,
    benchmark,
    gateway_endpoint,
    local_endpoint,
    run_concurrency,
    run_poisson,
    stream_request,
    warm_up,
)
from helpers.layers.vllm.benchmark.report import (  # noqa: F401 - the public surface of the package
    ASSUMED_LOCAL_INSTANCE,
    RESULTS_DIR,
    cost_per_million_output_tokens,
    environment_stamp,
    instance_price,
    load,
    plot,
    save,
    vllm_node,
)
