"""Chapter 05's Grafana dashboards (manifests/05-observability/dashboards/*.json): vLLM and the Ray Serve app.

kube-prometheus-stack's Grafana provisions them from its values (`dashboardProviders` + `dashboards`, see
grafana_values()); helpers.infra.k8s.operators puts them there. Every metric a panel queries must be in
dashboards/metrics.yaml, the catalogue of what each exporter really exports at the version the workshop pins, with
the upstream source that defines it; metric_problems() says which panel names a metric that is not."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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


# ---------------------------------------------------------------- the same panels, from local scrapes
#
# Locally there is no Prometheus and no Grafana, but the Ray Serve app exports the same series. local_panels()
# evaluates each panel's own PromQL over scrapes taken while a load ran (metrics.scrape_while), for the three
# shapes these dashboards use: sum by (...) (rate(m{...}[w])), histogram_quantile(q, sum by (le, ...) (rate(...))),
# and sum by (...) (m{...}). rate() is the increase over the last `window` seconds divided by the time between the
# two scrapes, so the window should hold whole export intervals of the exporter (Ray here: 2 s).

UNITS = {"reqps": "requests / s", "ms": "milliseconds", "s": "seconds", "short": "count", "percentunit": "share"}


@dataclass(frozen=True)
class Query:
    """One panel query, parsed: the metric, its label matchers, the labels it sums by, rate and quantile."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)
    by: tuple[str, ...]
    rate: bool
    quantile: float | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a series' labels satisfy every matcher (a missing label counts as "", as in Prometheus)."""
        for label, op, value in self.matchers:
            have = labels.get(label, "")
            hit = re.fullmatch(value, have) is not None if op in ("=~", "!~") else have == value
            if hit == op.startswith("!"):
                return False
        return True


def parse_query(expr: str, variables: dict[str, str] | None = None) -> Query:
    """Parse a panel's PromQL; Grafana variables in matchers take `variables` (default ".*", the "All" value)."""
    text, quantile = expr.strip(), None
    if found := re.fullmatch(r"histogram_quantile\(\s*([0-9.]+)\s*,(.*)\)", text, re.S):
        quantile, text = float(found.group(1)), found.group(2).strip()
    summed = re.fullmatch(r"sum\s+by\s*\(([^)]*)\)\s*\((.*)\)", text, re.S)
    if not summed:
        raise ValueError(f"not one of the query shapes local_panels() evaluates: {expr}")
    by = tuple(label.strip() for label in summed.group(1).split(",") if label.strip())
    inner = summed.group(2).strip()
    rate = re.fullmatch(r"rate\((.*)\[[^\]]*\]\s*\)", inner, re.S)
    selector = re.fullmatch(r"([a-zA-Z_:][\w:]*)\s*(?:\{(.*)\})?", (rate.group(1) if rate else inner).strip(), re.S)
    if not selector:
        raise ValueError(f"no metric selector in: {expr}")
    values = variables or {}
    matchers = tuple(
        (label, op, re.sub(r"\$\{?(\w+)\}?", lambda v: values.get(v.group(1), ".*"), value))
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', selector.group(2) or ""))
    return Query(selector.group(1), matchers, by, rate is not None, quantile)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile on cumulative bucket counts {upper bound: count}; None without samples."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0 or not bounds or bounds[-1] != float("inf"):
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):  # in the open last bucket: the highest finite bound, as Prometheus answers
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = bound, count
    return lower


def _series(scrape: Any, query: Query) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(labels.items())): value for labels, value in scrape.families.get(query.metric, [])
            if query.matches(labels)}


def evaluate(query: Query, scrapes: list[Any], window: float = 4.0) -> dict[tuple[tuple[str, str], ...],
                                                                              list[tuple[float, float]]]:
    """The query at every scrape (rates from `window` seconds on): {group labels: [(seconds, value), ...]}."""
    result: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    group_by = query.by if query.quantile is None else tuple(label for label in query.by if label != "le")
    for i, scrape in enumerate(scrapes):
        now = _series(scrape, query)
        if query.rate:
            earlier = [s for s in scrapes[:i] if s.seconds <= scrape.seconds - window]
            if not earlier:
                continue
            before, seconds = _series(earlier[-1], query), scrape.seconds - earlier[-1].seconds
            # a counter that went down was reset (a restarted process): its whole value is the increase
            now = {key: (v - before[key] if v >= before.get(key, 0.0) else v) / seconds
                   for key, v in now.items()}
        groups: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
        for key, value in now.items():
            labels = dict(key)
            group = tuple((label, labels.get(label, "")) for label in group_by)
            le = float(labels.get("le", "nan")) if query.quantile is not None else 0.0
            groups.setdefault(group, {})
            groups[group][le] = groups[group].get(le, 0.0) + value
        for group, values in groups.items():
            value = (histogram_quantile(query.quantile, values) if query.quantile is not None
                     else sum(values.values()))
            if value is not None:
                result.setdefault(group, []).append((scrape.seconds, value))
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    """A Grafana legend format ("p95 {{application}}") filled with a series' labels."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template or "")
    return " ".join(text.split()) or ", ".join(f"{k}={v}" for k, v in labels.items())


@dataclass
class PanelData:
    """One dashboard panel evaluated locally: its title, unit, place in the grid, and (legend, points) series."""

    title: str
    unit: str
    position: tuple[int, int]  # (row y, column x) of the panel's gridPos
    series: list[tuple[str, list[tuple[float, float]]]]


def local_panels(name: str, scrapes: list[Any], window: float = 4.0,
                 variables: dict[str, str] | None = None) -> list[PanelData]:
    """Every panel of a dashboard, its queries evaluated over local scrapes, in the dashboard's order. A series
    that stays at zero all along is left out (Grafana would draw it as a flat line)."""
    panels = []
    for panel in dashboards()[name].get("panels") or []:
        series = []
        for target in panel.get("targets") or []:
            for group, points in evaluate(parse_query(target["expr"], variables), scrapes, window).items():
                if any(value for _, value in points):
                    series.append((legend(target.get("legendFormat", ""), dict(group)), points))
        grid = panel.get("gridPos") or {}
        unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit", "")
        panels.append(PanelData(panel.get("title", "?"), unit, (grid.get("y", 0), grid.get("x", 0)), series))
    return sorted(panels, key=lambda p: p.position)


def plot_panels(panels: list[PanelData], title: str, load: tuple[float, float] | None = None,
                columns: int = 2) -> Any:
    """The panels as a grid of small line charts, each with its legend; `load` shades when the load ran."""
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(11, 2.7 * rows), sharex=True, squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        if load:
            ax.axvspan(*load, color="0.92", label="load running")
        for label, points in panel.series:
            ax.plot([t for t, _ in points], [v for _, v in points], marker=".", label=label)
        if not panel.series:
            ax.text(0.5, 0.5, "every series stayed at 0", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(UNITS.get(panel.unit, panel.unit), fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("seconds since sampling began")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


GRAFANA_RELEASE = "kube-prometheus-stack"  # chapter 01's release (helpers.infra.k8s.operators) that runs Grafana


def grafana_service() -> tuple[str, int]:
    """Grafana's Service (the chart names it <release>-grafana) and its port (the chart's default, 80)."""
    return f"{GRAFANA_RELEASE}-grafana", 80


def grafana_port_forward(namespace: str = "monitoring", local_port: int = 3001) -> str:
    """The kubectl command that makes the internal Grafana reachable on this machine (3000 is Langfuse's)."""
    name, port = grafana_service()
    return f"kubectl -n {namespace} port-forward svc/{name} {local_port}:{port}"
