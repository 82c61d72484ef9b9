"""Where a benchmark ran and what its tokens cost: the environment stamp, instance prices from the price table
and the scheduling model, saving results under build/benchmarks/, and the latency-throughput plot."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.config import ROOT, Settings, get_settings
from helpers.layers.vllm.benchmark.driver import BenchmarkError, BenchmarkResult, Endpoint
from helpers.layers.vllm.benchmark.metrics import RunMetrics

if TYPE_CHECKING:
    from helpers.target import Target

RESULTS_DIR = ROOT / "build" / "benchmarks"  # git-ignored
# The instance the local figure is priced as: 2 vCPUs of x86, like the 2 cores this workshop is measured on.
ASSUMED_LOCAL_INSTANCE = "m7i.large"


def cost_per_million_output_tokens(hourly_usd: Decimal | float, output_tokens_per_s: float) -> Decimal:
    """USD per 1M output tokens when a node costing `hourly_usd` streams `output_tokens_per_s` all hour."""
    if output_tokens_per_s <= 0:
        raise ValueError("output tokens/s must be positive to price a token")
    per_hour = Decimal(str(output_tokens_per_s)) * 3600
    return (Decimal(str(hourly_usd)) / per_hour * 1_000_000).quantize(Decimal("0.0001"))


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; elsewhere what platform knows)."""
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
        "hardware": {"machine": platform.machine(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
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


def vllm_node(t: Target, workload: str = "vllm-reasoning") -> tuple[str, Decimal]:
    """The instance type (and hourly price) the scheduling model puts vLLM's reasoning server on in eks."""
    from helpers.infra import scheduling

    report = scheduling.platform_cost(scheduling.platform_workloads(t.render_all()), scheduling.node_pools(t))
    for part in report.parts:
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
