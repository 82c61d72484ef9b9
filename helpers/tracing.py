"""One OpenTelemetry pipeline: tracer set-up (Langfuse when configured, else the local Phoenix), W3C context, spans back, a waterfall.

Every process of a request exports its spans over OTLP/HTTP to the same backend:

    client / agent  ──traceparent──▶  gateway (LiteLLM `otel` / `langfuse_otel` callback)
                                         ──traceparent──▶  model server (llama.cpp) or Ray Serve app

The backend is Langfuse when LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_HOST are set (Langfuse
Cloud or any Langfuse server: its OTLP endpoint is /api/public/otel), otherwise the local Arize Phoenix of
helpers.stack (service `phoenix`, OTLP on /v1/traces). Servers record a span only when the caller sends a
sampled `traceparent` (sampler parentbased_always_off), so an idle laptop exports nothing.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry.sdk.trace import SpanProcessor

from helpers.config import ROOT, Settings, get_settings

LANGFUSE_VARS = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_HOST")
PHOENIX_VENV = ROOT / ".venvs" / "phoenix"
PHOENIX_PROJECT = "default"  # spans without an openinference.project.name land in Phoenix's default project
INSTALL_PHOENIX = ("make phoenix-env  (that is: python3.11 -m venv .venvs/phoenix && .venvs/phoenix/bin/pip install "
                   "pip==25.3 && .venvs/phoenix/bin/pip install -r requirements/phoenix.txt)")
SERVER_SAMPLER = "parentbased_always_off"  # servers trace only requests whose caller is tracing


class TracingError(RuntimeError):
    """Tracing cannot be set up or spans cannot be read back; the message says what to do."""


# ---------------------------------------------------------------- where spans go


@dataclass(frozen=True)
class Destination:
    """Where OTLP/HTTP spans go: the backend, its traces URL, the headers it needs (secret), its UI."""

    backend: Literal["langfuse", "phoenix"]
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    ui_url: str = ""

    def describe(self) -> dict[str, str]:
        """A printable summary: header values masked."""
        from helpers.config import mask

        return {"backend": self.backend, "endpoint": self.endpoint, "ui": self.ui_url,
                "headers": ", ".join(f"{k}: {mask(v)}" for k, v in self.headers.items()) or "(none)"}


def langfuse_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_HOST are all set."""
    env = os.environ if env is None else env
    return all(env.get(name) for name in LANGFUSE_VARS)


def langfuse_headers(public_key: str, secret_key: str) -> dict[str, str]:
    """The OTLP headers Langfuse's /api/public/otel endpoint needs (basic auth with the project keys)."""
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
    return {"Authorization": f"Basic {token}", "x-langfuse-ingestion-version": "4"}


def phoenix_url(settings: Settings | None = None) -> str:
    """The local Phoenix's base URL (UI and API)."""
    settings = settings or get_settings()
    return f"http://{settings.host}:{settings.phoenix_port}"


def destination(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> Destination:
    """Langfuse when its three variables are set, else the local Phoenix."""
    env = os.environ if env is None else env
    if langfuse_configured(env):
        host = env["LANGFUSE_HOST"].rstrip("/")
        return Destination("langfuse", f"{host}/api/public/otel/v1/traces",
                           langfuse_headers(env["LANGFUSE_PUBLIC_KEY"], env["LANGFUSE_SECRET_KEY"]), host)
    base = phoenix_url(settings)
    return Destination("phoenix", f"{base}/v1/traces", {}, base)


def exporter(dest: Destination) -> Any:
    """An OTLP/HTTP span exporter for a destination (nothing is sent until spans are exported)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=dest.endpoint, headers=dict(dest.headers), timeout=5)


def _headers_env(headers: Mapping[str, str]) -> str:
    from urllib.parse import quote

    return ",".join(f"{k}={quote(v)}" for k, v in headers.items())


def server_environment(settings: Settings | None = None) -> dict[str, str]:
    """Environment for a local server process (model server, Ray Serve): where to export, sampled callers only."""
    dest = destination(settings)
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": dest.endpoint, "OTEL_TRACES_SAMPLER": SERVER_SAMPLER,
           "OTEL_BSP_SCHEDULE_DELAY": "500"}
    if dest.headers:
        env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = _headers_env(dest.headers)
    return env


def gateway_environment(settings: Settings | None = None) -> dict[str, str]:
    """Environment for LiteLLM's tracing callback: Langfuse's own variables, or OTLP/HTTP to Phoenix."""
    dest = destination(settings)
    env = {"OTEL_SERVICE_NAME": "litellm-gateway", "OTEL_TRACES_SAMPLER": SERVER_SAMPLER,
           "OTEL_BSP_SCHEDULE_DELAY": "500"}
    if dest.backend == "langfuse":
        env.update({"LANGFUSE_PUBLIC_KEY": os.environ["LANGFUSE_PUBLIC_KEY"],
                    "LANGFUSE_SECRET_KEY": os.environ["LANGFUSE_SECRET_KEY"],
                    "LANGFUSE_OTEL_HOST": dest.ui_url})
    else:
        env.update({"OTEL_EXPORTER": "otlp_http", "OTEL_ENDPOINT": dest.endpoint})
    return env


def gateway_callback(target: str, env: Mapping[str, str] | None = None) -> str:
    """LiteLLM's callback name: `langfuse_otel` on eks or when Langfuse is configured, else `otel` (to Phoenix)."""
    return "langfuse_otel" if target == "eks" or langfuse_configured(env) else "otel"


# ---------------------------------------------------------------- the client side


class ServiceName(SpanProcessor):
    """Copies the resource's service.name onto every span (Phoenix keeps span attributes, not resources)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Label the span with its service."""
        span.set_attribute("service.name", str(span.resource.attributes.get("service.name", "")))


class SpanCopy(SpanProcessor):
    """A span processor that keeps a copy of every finished span in memory (for tests and quick looks)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def on_end(self, span: Any) -> None:
        """Keep the finished span."""
        self.spans.append(span)


_configured: dict[str, Any] = {}
_global: dict[str, Any] = {}


def configure(service_name: str, settings: Settings | None = None, dest: Destination | None = None,
              set_global: bool = True) -> Any:
    """A TracerProvider for this process exporting to Langfuse (if configured) or Phoenix; made global once."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    dest = dest or destination(settings)
    key = f"{service_name}|{dest.endpoint}"
    if key in _configured:
        return _configured[key]
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(ServiceName())
    provider.add_span_processor(BatchSpanProcessor(exporter(dest), schedule_delay_millis=500))
    provider.destination = dest  # type: ignore[attr-defined]
    provider.copy = SpanCopy()  # type: ignore[attr-defined]
    provider.add_span_processor(provider.copy)  # type: ignore[attr-defined]
    if set_global and not _global:  # OpenTelemetry allows one global provider per process
        trace.set_tracer_provider(provider)
        _global["provider"] = provider
    _configured[key] = provider
    return provider


def inject(headers: Mapping[str, str] | None = None, context: Any = None) -> dict[str, str]:
    """Headers plus the W3C `traceparent` (and `tracestate`) of the current span, or of `context`."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = dict(headers or {})
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return carrier


def extract(headers: Mapping[str, str]) -> Any:
    """The OTel context a W3C `traceparent` header names (an empty context when there is none)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({k.lower(): v for k, v in headers.items()})


def parse_traceparent(value: str) -> dict[str, Any]:
    """The parts of a W3C traceparent: version, trace id, parent span id, sampled flag."""
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        raise ValueError(f"not a W3C traceparent: {value!r} (expected 00-<32 hex>-<16 hex>-<2 hex>)")
    return {"version": parts[0], "trace_id": parts[1], "parent_id": parts[2], "sampled": int(parts[3], 16) & 1 == 1}


def trace_id_of(span: Any) -> str:
    """The 32-hex-digit trace id of a span."""
    return format(span.get_span_context().trace_id, "032x")


def http_client(**kwargs: Any) -> Any:
    """An httpx.Client that adds the current W3C trace context to every request (pass it to OpenAI(http_client=...))."""
    import httpx

    def add_context(request: Any) -> None:
        for key, value in inject().items():
            request.headers[key] = value

    return httpx.Client(event_hooks={"request": [add_context]}, **kwargs)


def async_http_client(**kwargs: Any) -> Any:
    """An httpx.AsyncClient that adds the current W3C trace context to every request (for AsyncOpenAI, Strands)."""
    import httpx

    async def add_context(request: Any) -> None:
        for key, value in inject().items():
            request.headers[key] = value

    return httpx.AsyncClient(event_hooks={"request": [add_context]}, **kwargs)


# ---------------------------------------------------------------- the server side


def server_tracer(service_name: str) -> Any | None:
    """A tracer for a server process, configured from OTEL_* variables (None when no endpoint is set)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))  # sampler from the env
    provider.add_span_processor(ServiceName())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=5)))
    return provider.get_tracer("llm-eks-workshop")


def usage_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    """gen_ai.* attributes from an OpenAI-style response body (model and token counts)."""
    usage = body.get("usage") or {}
    attrs = {"gen_ai.response.model": body.get("model"),
             "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
             "gen_ai.usage.output_tokens": usage.get("completion_tokens")}
    return {k: v for k, v in attrs.items() if v is not None}


class TracingMiddleware:
    """ASGI middleware: a SERVER span per POST on the model routes, child of the caller's traceparent."""

    def __init__(self, app: Any, service_name: str, routes: frozenset[str], tracer: Any | None = None) -> None:
        self.app = app
        self.routes = routes
        self.tracer = tracer if tracer is not None else server_tracer(service_name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Trace the request when the caller sent a traceparent; otherwise pass it through untouched."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []} \
            if scope.get("type") == "http" else {}
        if self.tracer is None or "traceparent" not in headers or scope.get("path") not in self.routes:
            return await self.app(scope, receive, send)
        from opentelemetry.trace import SpanKind, Status, StatusCode

        request_body, response_body, status = bytearray(), bytearray(), {"code": 0, "json": False}

        async def receive_copy() -> dict[str, Any]:
            message = await receive()
            if len(request_body) < 1_000_000:
                request_body.extend(message.get("body", b""))
            return message

        async def send_copy(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["json"] = any(k == b"content-type" and b"json" in v for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body" and status["json"] and len(response_body) < 1_000_000:
                response_body.extend(message.get("body", b""))
            await send(message)

        name = f"{scope.get('method', 'POST')} {scope['path']}"
        with self.tracer.start_as_current_span(name, context=extract(headers), kind=SpanKind.SERVER) as span:
            span.set_attribute("http.route", scope["path"])
            await self.app(scope, receive_copy, send_copy)
            span.set_attribute("http.response.status_code", status["code"])
            try:
                model = json.loads(bytes(request_body) or b"{}").get("model")
                if model:
                    span.set_attribute("gen_ai.request.model", model)
                if response_body:
                    for key, value in usage_attributes(json.loads(bytes(response_body))).items():
                        span.set_attribute(key, value)
            except (ValueError, AttributeError):
                pass  # not JSON: the span keeps its timing and status
            if status["code"] >= 500:
                span.set_status(Status(StatusCode.ERROR))


def service_exports_spans(name: str) -> bool | None:
    """Whether a running local service was started with a trace endpoint (None when it is not running)."""
    import psutil

    from helpers import stack

    if name == "gateway":
        from helpers import gateway

        return gateway.tracing_active() if stack.service_status(name).pid else None
    pid = stack.service_status(name).pid
    if pid is None:
        return None
    try:
        return bool(psutil.Process(pid).environ().get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    except psutil.Error:
        return None


# ---------------------------------------------------------------- Phoenix, the local backend (helpers.stack)


def phoenix_installed() -> bool:
    """Whether Phoenix's own environment (.venvs/phoenix) exists."""
    return (PHOENIX_VENV / "bin" / "phoenix").exists()


def phoenix_command(settings: Settings) -> list[str]:
    """Command line of the local Phoenix server (its own environment, loopback only)."""
    if not phoenix_installed():
        from helpers.stack import StackError

        raise StackError(f"Phoenix's environment {PHOENIX_VENV} does not exist. Create it with:\n  {INSTALL_PHOENIX}\n"
                         f"(from {ROOT}), then re-run.")
    return [str(PHOENIX_VENV / "bin" / "python"), str(ROOT / "helpers" / "phoenix_loopback.py")]


def phoenix_environment(settings: Settings) -> dict[str, str]:
    """Phoenix's environment: loopback ports, data under the state folder, no telemetry, no gRPC listener on 0.0.0.0."""
    workdir = Path(settings.state_dir) / "phoenix"
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        "PHOENIX_HOST": settings.host,
        "PHOENIX_PORT": str(settings.phoenix_port),
        "PHOENIX_GRPC_HOST": settings.host,
        "PHOENIX_GRPC_PORT": str(settings.phoenix_grpc_port),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",  # no web fonts or other downloads from the internet
        "PHOENIX_ENABLE_AUTH": "false",  # loopback only; nothing outside this machine can reach it
        "NO_PROXY": "127.0.0.1,localhost",
    }


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


def wait_for_spans(trace_id: str, expected: int = 1, settings: Settings | None = None, timeout_s: float = 20.0,
                   services: set[str] | None = None) -> list[dict[str, Any]]:
    """The trace's spans from the backend, once at least `expected` (and every named service) arrived, or at the timeout."""
    langfuse = destination(settings).backend == "langfuse"
    deadline = time.monotonic() + timeout_s
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = langfuse_spans(trace_id) if langfuse else phoenix_spans(trace_id, settings)
        seen = {service_of(s) for s in spans}
        if len(spans) >= expected and (services or set()) <= seen:
            break
        time.sleep(0.5)
    return spans


# ---------------------------------------------------------------- the picture


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
    """A matplotlib waterfall of span rows: one bar per span, labelled with service, model and tokens."""
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    return fig


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span on the global tracer (the one configure() installed), with attributes."""
    from opentelemetry import trace

    with trace.get_tracer("llm-eks-workshop").start_as_current_span(name, attributes=attributes) as current:
        yield current
