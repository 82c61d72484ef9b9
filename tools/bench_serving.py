"""Serving figures (notebook 09): a short concurrency sweep against an isolated local model server.

    .venv/bin/python tools/bench_serving.py

Runs in its own state folder and ports (never touches a running workshop stack). Prints TTFT/TPOT/E2EL
percentiles, output tokens/s, goodput under the SLO below, and the cost per million output tokens priced
as helpers.layers.vllm.benchmark.ASSUMED_LOCAL_INSTANCE; saves the JSON result under build/benchmarks/.
`bench_serving(settings)` returns the report rows for tools/bench.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

CONCURRENCIES = (1, 2, 4)
REQUESTS_PER_LEVEL = 4
MAX_TOKENS = 48
SLO_TTFT_MS = 2000.0
SLO_TPOT_MS = 150.0


def bench_serving(settings=None) -> list[dict[str, object]]:  # noqa: ANN001  (Settings | None)
    """Concurrency sweep (1, 2, 4) of streamed requests against the local model server; one row per level."""
    from bench import row  # imported here, so tools/bench.py may import this module at its top

    from helpers import config
    from helpers.local import stack
    from helpers.layers.vllm import benchmark as sb

    settings = settings or config.get_settings()
    stack.ensure("model-server")
    endpoint = sb.local_endpoint(settings)
    price = sb.instance_price(sb.ASSUMED_LOCAL_INSTANCE)
    slo = sb.SLO(ttft_ms=SLO_TTFT_MS, tpot_ms=SLO_TPOT_MS)
    result = sb.benchmark(endpoint, CONCURRENCIES, REQUESTS_PER_LEVEL, max_tokens=MAX_TOKENS, slo=slo,
                          stamp=sb.environment_stamp(endpoint, settings, sb.ASSUMED_LOCAL_INSTANCE, price),
                          show_progress=False)
    path = sb.save(result)
    rows = []
    for run in result.runs:
        rows.append(row(f"serving {run.label} ({run.completed}/{run.requests} ok)",
                        f"{run.output_throughput:.1f} tok/s, TTFT p50/p99 {run.ttft_ms['p50']:.0f}/"
                        f"{run.ttft_ms['p99']:.0f} ms, TPOT p50 {run.tpot_ms['p50']:.0f} ms, "
                        f"goodput {run.request_goodput:.2f} req/s", f"SLO {slo}", None))
    clean = [r for r in result.runs if r.failed == 0 and r.output_throughput > 0]
    if clean:  # a level where streams were cut off would price tokens nobody received in full
        best = max(clean, key=lambda r: r.output_throughput)
        cost = sb.cost_per_million_output_tokens(price, best.output_throughput)
        rows.append(row(f"serving cost per 1M output tokens ({best.label})",
                        f"${cost} at {best.output_throughput:.1f} tok/s on {sb.ASSUMED_LOCAL_INSTANCE} ${price}/h",
                        "info (priced as an assumed instance)", None))
    else:
        rows.append(row("serving cost per 1M output tokens", "not priced: every level had failed requests", "-",
                        None))
    rows.append(row("serving result saved", str(path.relative_to(ROOT)), "-", None))
    return rows


def main() -> int:
    """Run the bench alone, in an isolated stack, and print its rows."""
    from bench import isolated_stack, print_rows

    with isolated_stack() as settings:
        rows = bench_serving(settings)
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
