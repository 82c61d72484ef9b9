"""Server-side tracing shared by the workshop's programs (the llama.cpp server, the Ray Serve app).

A server records a span only for a request whose caller sent a sampled W3C `traceparent`; where to export
comes from the standard OTEL_* variables the stack (or the pod spec) sets. Imports only OpenTelemetry."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor


def extract(headers: Mapping[str, str]) -> Any:
    """The OTel context a W3C `traceparent` header names (an empty context when there is none)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({k.lower(): v for k, v in headers.items()})


class ServiceName(SpanProcessor):
    """Copies the resource's service.name onto every span (Phoenix keeps span attributes, not resources)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Label the span with its service."""
        span.set_attribute("service.name", str(span.resource.attributes.get("service.name", "")))


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
