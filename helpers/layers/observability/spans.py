"""Reading a trace back and drawing it: spans from Phoenix or Langfuse, one row per span in tree order, a waterfall."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from helpers.config import Settings
from helpers.layers.observability.trace_store import PHOENIX_PROJECT
from helpers.layers.observability.tracing import TracingError, destination, phoenix_url


def phoenix_spans(trace_id: str, settings: Settings | None = None, project: str = PHOENIX_PROJECT,
                  limit: int = 1000) -> list[dict[str, Any]]:
    """The spans of one trace stored in the local Phoenix, as dicts (Phoenix's REST API)."""
    import requests

    url = f"{phoenix_url(settings)}/v1/projects/{project}/spans"
    try:
        reply = requests.get(url, params={"limit": limit, "trace_id": trace_id}, timeout=10)
    except requests.RequestException as exc:
        raise TracingError(f"Phoenix does not answer at {url}: {exc}. Start it: stack.ensure('phoenix').") from None
    if reply.status_code != 200:
        raise TracingError(f"Phoenix answered {reply.status_code} for {url}: {reply.text[:200]}")
    spans = reply.json().get("data", [])
    return [s for s in spans if (s.get("context") or {}).get("trace_id") == trace_id]


def langfuse_spans(trace_id: str, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The observations of one trace in Langfuse, shaped like Phoenix spans (Langfuse's public API)."""
    import requests

    env = os.environ if env is None else env
    host = env["LANGFUSE_HOST"].rstrip("/")
    reply = requests.get(f"{host}/api/public/traces/{trace_id}", auth=(env["LANGFUSE_PUBLIC_KEY"],
                                                                       env["LANGFUSE_SECRET_KEY"]), timeout=10)
    if reply.status_code != 200:
        raise TracingError(f"Langfuse answered {reply.status_code} for trace {trace_id}: check the keys and host.")
    spans = []
    for o in reply.json().get("observations", []):
        usage = o.get("usageDetails") or {}
        meta = o.get("metadata") or {}
        attrs = {"gen_ai.request.model": o.get("model"), "gen_ai.usage.input_tokens": usage.get("input"),
                 "gen_ai.usage.output_tokens": usage.get("output"),
                 "service.name": ((meta.get("resourceAttributes") or {}).get("service.name"))}
        spans.append({"name": o.get("name"), "context": {"trace_id": trace_id, "span_id": o.get("id")},
                      "parent_id": o.get("parentObservationId"), "start_time": o.get("startTime"),
                      "end_time": o.get("endTime"), "attributes": {k: v for k, v in attrs.items() if v}})
    return spans


QUIET_S = 1.5  # seconds without a new span before a trace counts as complete (exporters send in batches)


def wait_for_spans(trace_id: str, expected: int = 1, settings: Settings | None = None, timeout_s: float = 20.0,
                   services: Iterable[str] = (), quiet_s: float = QUIET_S, poll_s: float = 0.5,
                   source: Callable[[], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """The trace's spans once `expected` of them and every named service arrived and the count held for `quiet_s`.

    Each process exports its spans in its own batches, so a trace fills up over a second or two: the wait ends when
    the count has stopped growing, not at the first poll that looks complete. At the timeout it returns what has
    arrived; `missing_services(spans, services)` names the processes that never reported. `source` reads the spans
    (default: the backend of `destination(settings)`, Langfuse or the local Phoenix)."""
    if source is None:
        langfuse = destination(settings).backend == "langfuse"

        def source() -> list[dict[str, Any]]:
            return langfuse_spans(trace_id) if langfuse else phoenix_spans(trace_id, settings)

    wanted = set(services)
    deadline = time.monotonic() + timeout_s
    spans = source()
    count, changed = len(spans), time.monotonic()
    while True:
        now = time.monotonic()
        if len(spans) != count:
            count, changed = len(spans), now
        complete = len(spans) >= expected and not missing_services(spans, wanted)
        if (complete and now - changed >= quiet_s) or now >= deadline:
            return spans
        time.sleep(max(0.0, min(poll_s, deadline - now)))
        spans = source()


def missing_services(spans: Iterable[Mapping[str, Any]], services: Iterable[str]) -> list[str]:
    """The services (process names, as `service_of` reads them) that recorded none of these spans, sorted."""
    seen = {service_of(s) for s in spans}
    return sorted(set(services) - seen)


GATEWAY_SERVICE = "litellm-gateway"


GATEWAY_MAIN_SPANS = ("Received Proxy Server Request", "litellm_request")  # the rest: auth, routing, cache, FastAPI


def service_of(span: Mapping[str, Any]) -> str:
    """The process that recorded a stored span: its service.name attribute, or the gateway for LiteLLM's unlabelled spans."""
    return str(_flatten(span.get("attributes") or {}).get("service.name") or GATEWAY_SERVICE)


def main_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows worth a picture: every span of the client and the servers, the gateway's request and LLM-call spans."""
    return [r for r in rows if r["service"] != GATEWAY_SERVICE or r["span"] in GATEWAY_MAIN_SPANS]


def _seconds(value: Any) -> float:
    from datetime import datetime

    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def span_rows(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per span, in tree order: depth, name, service, start offset and duration (ms), model, tokens."""
    by_id = {(s.get("context") or {}).get("span_id"): s for s in spans}
    children: dict[Any, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s.get("parent_id") if s.get("parent_id") in by_id else None
        children.setdefault(parent, []).append(s)
    t0 = min((_seconds(s["start_time"]) for s in spans), default=0.0)
    rows: list[dict[str, Any]] = []

    def walk(parent: Any, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: _seconds(x["start_time"])):
            attrs = s.get("attributes") or {}
            flat = _flatten(attrs)
            start, end = _seconds(s["start_time"]), _seconds(s["end_time"])
            rows.append({
                "depth": depth, "span": s.get("name"), "service": service_of(s),
                "start_ms": round((start - t0) * 1000, 1), "duration_ms": round((end - start) * 1000, 1),
                "model": flat.get("gen_ai.request.model") or flat.get("gen_ai.response.model")
                or flat.get("llm.model_name") or "",
                "input_tokens": flat.get("gen_ai.usage.input_tokens") or flat.get("llm.token_count.prompt"),
                "output_tokens": flat.get("gen_ai.usage.output_tokens") or flat.get("llm.token_count.completion"),
                "span_id": (s.get("context") or {}).get("span_id"), "parent_id": s.get("parent_id"),
            })
            walk((s.get("context") or {}).get("span_id"), depth + 1)

    walk(None, 0)
    return rows


def _flatten(attrs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in attrs.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def waterfall(rows: list[dict[str, Any]], title: str = "one request, one trace") -> Any:
    """A matplotlib waterfall of span rows: a bar per span labelled with model and tokens, a legend of the processes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    services = sorted({r["service"] for r in rows})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(services)}
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(rows) + 1.4))
    total = max((r["start_ms"] + r["duration_ms"] for r in rows), default=1.0)
    for i, r in enumerate(rows):
        ax.barh(i, max(r["duration_ms"], total * 0.003), left=r["start_ms"], color=colours[r["service"]],
                edgecolor="black", linewidth=0.4)
        detail = f"{r['duration_ms']:.0f} ms"
        if r["model"]:
            detail += f" · {r['model']}"
        if r["input_tokens"] is not None or r["output_tokens"] is not None:
            detail += f" · tokens in {r['input_tokens'] or 0} / out {r['output_tokens'] or 0}"
        ax.text(r["start_ms"] + r["duration_ms"] + total * 0.01, i, detail, va="center", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['span']}  [{r['service']}]" + "  ·" * r["depth"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, total * 1.45)
    ax.set_xlabel("milliseconds since the trace started")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Patch(facecolor=colours[s], edgecolor="black", linewidth=0.4, label=s) for s in services],
              title="process", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig
