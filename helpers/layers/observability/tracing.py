"""One OpenTelemetry pipeline: tracer set-up (Langfuse when configured, else the local Phoenix), W3C context, spans back, a waterfall.

Every process of a request exports its spans over OTLP/HTTP to the same backend:

    client / agent  ──traceparent──▶  gateway (LiteLLM `otel` / `langfuse_otel` callback)
                                         ──traceparent──▶  model server (llama.cpp) or Ray Serve app

The backend is Langfuse when LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_HOST are set (Langfuse
Cloud or any Langfuse server: its OTLP endpoint is /api/public/otel), otherwise the local Arize Phoenix of
helpers.local.stack (service `phoenix`, OTLP on /v1/traces). Servers record a span only when the caller sends a
sampled `traceparent` (sampler parentbased_always_off), so an idle laptop exports nothing.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry.sdk.trace import SpanProcessor

from helpers.errors import WorkshopError
from services.otel import ServiceName, extract  # noqa: F401 - the same span processor and context reader as the servers
from helpers.config import Settings, get_settings

if TYPE_CHECKING:
    from helpers.target import Target

LANGFUSE_VARS = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_HOST")
SERVER_SAMPLER = "parentbased_always_off"  # servers trace only requests whose caller is tracing


class TracingError(WorkshopError):
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


def gateway_callback(t: Target, env: Mapping[str, str] | None = None) -> str:
    """LiteLLM's callback name: `langfuse_otel` on eks or when Langfuse is configured, else `otel` (to Phoenix)."""
    return "langfuse_otel" if t.is_eks or langfuse_configured(env) else "otel"


# ---------------------------------------------------------------- the client side




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


def parse_traceparent(value: str) -> dict[str, Any]:
    """The parts of a W3C traceparent: version, trace id, parent span id, sampled flag."""
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        raise ValueError(f"not a W3C traceparent: {value!r} (expected 00-<32 hex>-<16 hex>-<2 hex>)")
    return {"version": parts[0], "trace_id": parts[1], "parent_id": parts[2], "sampled": int(parts[3], 16) & 1 == 1}


def trace_id_of(span: Any) -> str:
    """The 32-hex-digit trace id of a span."""
    return format(span.get_span_context().trace_id, "032x")


HTTP_TIMEOUT = 600.0  # seconds: model calls on a busy 2-core machine take minutes; httpx's own default is 5 s


def add_trace_context(request: Any) -> None:
    """httpx request hook: set the W3C `traceparent` (and `tracestate`) of the current span on the request."""
    for key, value in inject().items():
        request.headers[key] = value


async def add_trace_context_async(request: Any) -> None:
    """The same hook for httpx.AsyncClient, whose hooks must be coroutines."""
    add_trace_context(request)


def http_client(**kwargs: Any) -> Any:
    """An httpx.Client that adds the current W3C trace context to every request.

    Pass it to `openai.OpenAI(http_client=...)` or LangChain's `ChatOpenAI(http_client=...)`. The context is read
    when each request is sent, so a client built once carries each caller's current span."""
    import httpx

    kwargs.setdefault("timeout", HTTP_TIMEOUT)
    return httpx.Client(event_hooks={"request": [add_trace_context]}, **kwargs)


def async_http_client(**kwargs: Any) -> Any:
    """An httpx.AsyncClient that adds the current W3C trace context to every request, usable from many event loops.

    For `openai.AsyncOpenAI(http_client=...)` handed to Strands with `OpenAIModel(client=...)` (never inside
    `client_args`: Strands would close it after the first call), and for LangChain's `http_async_client`. Strands
    and ragas run each synchronous call in a fresh event loop, and a pooled connection belongs to the loop that
    opened it, so the client keeps no idle connection (`max_keepalive_connections=0`) unless told otherwise."""
    import httpx

    kwargs.setdefault("timeout", HTTP_TIMEOUT)
    kwargs.setdefault("limits", httpx.Limits(max_keepalive_connections=0))
    return httpx.AsyncClient(event_hooks={"request": [add_trace_context_async]}, **kwargs)


# ---------------------------------------------------------------- the server side


# ---------------------------------------------------------------- Phoenix, the local backend (helpers.local.stack)


# ---------------------------------------------------------------- the picture


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span on the global tracer (the one configure() installed), with attributes."""
    from opentelemetry import trace

    with trace.get_tracer("llm-eks-workshop").start_as_current_span(name, attributes=attributes) as current:
        yield current
