"""Prometheus metrics, read the way Prometheus scrapes them: the local endpoints (Ray Serve, the model server).

A scrape is one GET of an endpoint; `scrape_while` reads one again and again while some work (a short load) runs,
so helpers.layers.observability.dashboards can draw the panels a Grafana dashboard will show on EKS from them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from helpers.config import Settings, get_settings
from helpers.layers.ray.local import ray_temp_dir

Families = dict[str, list[tuple[dict[str, str], float]]]
T = TypeVar("T")


def ray_metrics_url(settings: Settings | None = None) -> str | None:
    """The local Ray's Prometheus endpoint (Ray and Ray Serve series), or None when Ray is not running."""
    settings = settings or get_settings()
    found = sorted((ray_temp_dir(settings) / "session_latest").glob("metrics_export_port_*"))
    if not found:
        return None
    port = found[0].read_text().strip()
    return f"http://{settings.host}:{port}/metrics" if port.isdigit() else None


def only_prefix(text: str, prefix: str) -> str:
    """The lines of a Prometheus text exposition for metrics whose names start with `prefix` (HELP/TYPE included)."""
    keep = (prefix, f"# HELP {prefix}", f"# TYPE {prefix}")
    return "".join(line + "\n" for line in text.splitlines() if line.startswith(keep))


def read_metrics(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0,
                 prefix: str = "") -> dict[str, Any]:
    """GET a Prometheus endpoint: {"status": code, "families": {name: [(labels, value), ...]}} (families empty on
    error); with `prefix`, only the metrics whose names start with it are parsed (Ray's endpoint is ~0.7 MB)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    try:
        reply = requests.get(url, headers=headers or {}, timeout=timeout)
    except requests.RequestException as exc:
        return {"status": type(exc).__name__, "families": {}}
    families: Families = {}
    if reply.status_code == 200 and "json" not in reply.headers.get("content-type", ""):
        text = only_prefix(reply.text, prefix) if prefix else reply.text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                families.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return {"status": reply.status_code, "families": families}


def metric_total(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels match."""
    return sum(v for lab, v in families.get(name, []) if all(lab.get(k) == val for k, val in labels.items()))


# ---------------------------------------------------------------- sampling while something runs


@dataclass(frozen=True)
class Scrape:
    """One read of an endpoint: seconds since sampling began, and the samples it returned."""

    seconds: float
    families: Families


def scrape_while(url: str, work: Callable[[], T], every: float = 1.0, settle_s: float = 0.0, prefix: str = "",
                 headers: dict[str, str] | None = None) -> tuple[T, list[Scrape]]:
    """Run `work()` while a thread reads `url` every `every` seconds, and `settle_s` seconds longer (an exporter
    that publishes every few seconds shows the last requests only then): work's result and every scrape, the
    first one taken before the work starts (a failed read is left out)."""
    scrapes: list[Scrape] = []
    started = time.monotonic()
    finished = threading.Event()

    def read() -> None:
        families = read_metrics(url, headers, prefix=prefix)["families"]
        if families:
            scrapes.append(Scrape(round(time.monotonic() - started, 3), families))

    def loop() -> None:
        while not finished.wait(every - (time.monotonic() - started) % every):
            read()

    read()
    thread = threading.Thread(target=loop, name="scrape_while", daemon=True)
    thread.start()
    try:
        result = work()
        time.sleep(settle_s)
    finally:
        finished.set()
        thread.join()
    return result, scrapes


@dataclass(frozen=True)
class LoadResult:
    """What a load run did: requests sent, failed, when it started and ended (seconds on the scrapes' clock)."""

    requests: int
    failures: int
    seconds: float


def run_load(call: Callable[[int], Any], seconds: float, concurrency: int) -> LoadResult:
    """Call `call(i)` (i = 0, 1, 2, ...) from `concurrency` threads, each one request after another, for `seconds`."""
    counter = iter(range(10**9))
    lock = threading.Lock()
    failures = [0]
    deadline = time.monotonic() + seconds

    def worker() -> int:
        done = 0
        while time.monotonic() < deadline:
            with lock:
                i = next(counter)
            try:
                call(i)
                done += 1
            except Exception:  # noqa: BLE001 - a failed request is counted, not raised: the load goes on
                with lock:
                    failures[0] += 1
        return done

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="load") as pool:
        sent = sum(pool.map(lambda _: worker(), range(concurrency)))
    return LoadResult(sent, failures[0], round(time.monotonic() - started, 3))
