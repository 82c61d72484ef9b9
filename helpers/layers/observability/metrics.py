"""Prometheus metrics, read the way Prometheus scrapes them: the local endpoints (Ray Serve, the model server)."""

from __future__ import annotations

from typing import Any

from helpers.config import Settings, get_settings
from helpers.layers.ray.local import ray_temp_dir


def ray_metrics_url(settings: Settings | None = None) -> str | None:
    """The local Ray's Prometheus endpoint (Ray and Ray Serve series), or None when Ray is not running."""
    settings = settings or get_settings()
    found = sorted((ray_temp_dir(settings) / "session_latest").glob("metrics_export_port_*"))
    if not found:
        return None
    port = found[0].read_text().strip()
    return f"http://{settings.host}:{port}/metrics" if port.isdigit() else None


def read_metrics(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """GET a Prometheus endpoint: {"status": code, "families": {name: [(labels, value), ...]}} (families empty on error)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    try:
        reply = requests.get(url, headers=headers or {}, timeout=timeout)
    except requests.RequestException as exc:
        return {"status": type(exc).__name__, "families": {}}
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    if reply.status_code == 200 and "json" not in reply.headers.get("content-type", ""):
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                families.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return {"status": reply.status_code, "families": families}


def metric_total(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels match."""
    return sum(v for lab, v in families.get(name, []) if all(lab.get(k) == val for k, val in labels.items()))
