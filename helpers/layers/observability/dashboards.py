"""Chapter 05's Grafana dashboards (manifests/05-observability/dashboards/*.json): vLLM and the Ray Serve app.

kube-prometheus-stack's Grafana provisions them from its values (`dashboardProviders` + `dashboards`, see
grafana_values()); helpers.infra.k8s.operators puts them there. Every metric a panel queries must be in
dashboards/metrics.yaml, the catalogue of what each exporter really exports at the version the workshop pins, with
the upstream source that defines it; metric_problems() says which panel names a metric that is not."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from helpers.infra.manifests import MANIFESTS_DIR

DASHBOARDS_DIR = MANIFESTS_DIR / "05-observability" / "dashboards"
CATALOGUE = DASHBOARDS_DIR / "metrics.yaml"
PROVIDER = "llm-workshop"  # Grafana's dashboard provider (and ConfigMap suffix) for the workshop's dashboards
FOLDER = "LLM workshop"  # the Grafana folder they appear in
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def dashboard_files() -> list[Path]:
    """The dashboard JSON files, by name."""
    return sorted(DASHBOARDS_DIR.glob("*.json"))


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard, parsed: file stem -> Grafana dashboard JSON."""
    return {path.stem: json.loads(path.read_text()) for path in dashboard_files()}


def grafana_values() -> dict[str, Any]:
    """The Grafana chart values that provision the dashboards from files (a provider and its dashboards)."""
    provider = {"name": PROVIDER, "orgId": 1, "folder": FOLDER, "type": "file", "disableDeletion": True,
                "editable": False, "options": {"path": f"/var/lib/grafana/dashboards/{PROVIDER}"}}
    return {
        "dashboardProviders": {"dashboardproviders.yaml": {"apiVersion": 1, "providers": [provider]}},
        "dashboards": {PROVIDER: {path.stem: {"json": path.read_text()} for path in dashboard_files()}},
    }


@cache
def catalogue() -> dict[str, Any]:
    """dashboards/metrics.yaml: per exporter, its version, upstream source and the metrics it exports."""
    return yaml.safe_load(CATALOGUE.read_text())


def exposed_names(exporter: str) -> dict[str, str]:
    """The series names Prometheus stores for an exporter's metrics (counters get _total, histograms _bucket/_sum/
    _count), each mapped to the metric that yields it."""
    found: dict[str, str] = {}
    for name, spec in catalogue()[exporter]["metrics"].items():
        for suffix in SUFFIXES[spec["type"]]:
            found[name + suffix] = name
    return found


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows included, and of every query variable."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend((panel.get("title", "?"), t["expr"]) for t in panel.get("targets") or [] if t.get("expr"))
            walk(panel.get("panels") or [])

    walk(dashboard.get("panels") or [])
    for var in (dashboard.get("templating") or {}).get("list") or []:
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            found.append((f"variable ${var['name']}", query))
    return found


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values()/query_result() query) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings: label values, regexes
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries: [5m], [$__rate_interval]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\blabel_values\s*\(\s*([a-zA-Z_:][\w:]*)\s*,[^)]*\)", r" \1 ", text)  # label_values(metric, label)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($model, ${datasource}, $__rate_interval)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d\w*", word):
            names.add(word)
    return names


def exporter_of(dashboard: dict[str, Any]) -> str:
    """The exporter a dashboard reads, from its tag `exporter:<name>` (a key of dashboards/metrics.yaml)."""
    return next((tag.split(":", 1)[1] for tag in dashboard.get("tags") or [] if tag.startswith("exporter:")), "")


def metric_problems(name: str, dashboard: dict[str, Any]) -> list[str]:
    """What is wrong with a dashboard's queries: its exporter is not named or unknown, or a panel queries a metric
    the exporter does not export (at the version the workshop pins)."""
    exporter = exporter_of(dashboard)
    if exporter not in catalogue():
        return [f"{name}: no known exporter named (a tag 'exporter:<name>'; got {exporter!r}; catalogue: "
                f"{', '.join(catalogue())})"]
    known = exposed_names(exporter)
    problems = []
    for title, expr in panel_queries(dashboard):
        metrics = promql_metrics(expr)
        if not metrics:
            problems.append(f"{name} / {title}: the query names no metric: {expr}")
        problems += [f"{name} / {title}: {m} is not a series {exporter} exports (dashboards/metrics.yaml)"
                     for m in sorted(metrics - set(known))]
    return problems
