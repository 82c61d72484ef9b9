"""Chapter 05: one trace per request (client → gateway → model server), the exporter switch, Phoenix, the eks manifests."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from helpers import config
from helpers.infra import manifests as m
from helpers.layers import gateway
from helpers.layers.observability import deploy as observability
from helpers.layers.observability import spans, trace_store, tracing
from helpers.local import stack
from helpers.target import Target
from services import otel

LANGFUSE_ENV = {"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test",
                "LANGFUSE_HOST": "https://langfuse.example.invalid/"}


@pytest.fixture
def no_langfuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the machine's tracing choice only through what they set."""
    for name in tracing.LANGFUSE_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def eks_t(isolated_settings: config.Settings) -> Target:
    """The eks target on isolated settings (rendering only: nothing here reaches a cluster)."""
    return Target("eks", isolated_settings)


# ---------------------------------------------------------------- the exporter switch (no network)


def test_langfuse_variables_choose_langfuse_else_phoenix(isolated_settings: config.Settings, no_langfuse) -> None:
    local = tracing.destination(isolated_settings, env={})
    assert local.backend == "phoenix"
    assert local.endpoint == f"http://127.0.0.1:{isolated_settings.phoenix_port}/v1/traces" and local.headers == {}
    lf = tracing.destination(isolated_settings, env=LANGFUSE_ENV)
    assert lf.backend == "langfuse"
    assert lf.endpoint == "https://langfuse.example.invalid/api/public/otel/v1/traces"
    assert lf.headers["x-langfuse-ingestion-version"] == "4"
    assert lf.headers["Authorization"] == "Basic " + __import__("base64").b64encode(b"pk-lf-test:sk-lf-test").decode()
    partial = {k: v for k, v in LANGFUSE_ENV.items() if k != "LANGFUSE_HOST"}
    assert tracing.destination(isolated_settings, env=partial).backend == "phoenix"
    assert "sk-lf-test" not in str(lf) and "sk-lf-test" not in str(lf.describe())


def test_spans_reach_langfuses_otel_endpoint_with_its_headers(isolated_settings: config.Settings, no_langfuse) -> None:
    from tests.local_http import serve

    with serve(lambda request: (200, None)) as fake_langfuse:  # a loopback server standing in for the Langfuse host
        dest = tracing.destination(isolated_settings, env={**LANGFUSE_ENV, "LANGFUSE_HOST": fake_langfuse.url})
        provider = tracing.configure("unit-test", dest=dest, set_global=False)
        with provider.get_tracer("t").start_as_current_span("hello"):
            pass
        provider.force_flush()
        provider.shutdown()
    [request] = fake_langfuse.requests
    assert request.path == "/api/public/otel/v1/traces"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["x-langfuse-ingestion-version"] == "4" and headers["authorization"].startswith("Basic ")
    assert headers["content-type"] == "application/x-protobuf"
    assert provider.destination is dest


def test_gateway_callback_and_environment_follow_the_switch(isolated_settings: config.Settings, no_langfuse,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    local, eks = Target("local", isolated_settings), Target("eks", isolated_settings)
    assert tracing.gateway_callback(local, env={}) == "otel"
    assert tracing.gateway_callback(local, env=LANGFUSE_ENV) == "langfuse_otel"
    assert tracing.gateway_callback(eks, env={}) == "langfuse_otel"
    env = tracing.gateway_environment(isolated_settings)
    assert env["OTEL_EXPORTER"] == "otlp_http" and env["OTEL_ENDPOINT"].endswith(f":{isolated_settings.phoenix_port}/v1/traces")
    for key, value in LANGFUSE_ENV.items():
        monkeypatch.setenv(key, value)
    env = tracing.gateway_environment(isolated_settings)
    assert env["LANGFUSE_OTEL_HOST"] == "https://langfuse.example.invalid" and "OTEL_ENDPOINT" not in env
    server = tracing.server_environment(isolated_settings)
    assert server["OTEL_TRACES_SAMPLER"] == "parentbased_always_off"
    assert "x-langfuse-ingestion-version=4" in server["OTEL_EXPORTER_OTLP_TRACES_HEADERS"]


def test_traced_gateway_config_adds_the_callback_and_forwards_traceparent(isolated_settings: config.Settings,
                                                                          no_langfuse) -> None:
    for target, callback in (("local", "otel"), ("eks", "langfuse_otel")):
        t = Target(target, isolated_settings)
        plain = gateway.gateway_config(t, tracing=False)
        traced = gateway.gateway_config(t, tracing=True)
        assert "callbacks" not in plain["litellm_settings"]
        assert traced["litellm_settings"]["callbacks"] == [callback]
        assert traced["litellm_settings"]["forward_traceparent_to_llm_provider"] is True
        del traced["litellm_settings"]["callbacks"], traced["litellm_settings"]["forward_traceparent_to_llm_provider"]
        assert traced == plain, "tracing adds two lines and changes nothing else"


def test_traceparent_round_trip() -> None:
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("client") as span:
        headers = tracing.inject({"x-other": "1"})
    parts = tracing.parse_traceparent(headers["traceparent"])
    assert parts["trace_id"] == tracing.trace_id_of(span) and parts["sampled"] and headers["x-other"] == "1"
    ctx = tracing.extract({"TraceParent": headers["traceparent"]})
    from opentelemetry import trace

    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == parts["trace_id"]
    with pytest.raises(ValueError, match="traceparent"):
        tracing.parse_traceparent("00-abc-def-01")


def test_the_knowledge_embedder_sends_the_callers_traceparent() -> None:
    from helpers.layers.rag import knowledge
    from helpers.target import Endpoint
    from tests.local_http import serve

    def embeddings(request: Any) -> tuple[int, Any]:
        return 200, {"object": "list", "model": "embedding", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                     "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5, 0.5]}]}

    provider = TracerProvider()
    with serve(embeddings) as server:
        embedder = knowledge.Embedder(Endpoint(server.url + "/v1", None, "embedding", "custom"), dim=3,
                                      timeout=7.0, max_retries=0)
        embedder.embed_one("outside any span")
        with provider.get_tracer("t").start_as_current_span("agent.retrieve") as retrieve:
            embedder.embed_one("inside the agent's span")
    outside, inside = ({k.lower(): v for k, v in r.headers.items()} for r in server.requests)
    assert "traceparent" not in outside, "no span, no trace context"
    parts = tracing.parse_traceparent(inside["traceparent"])
    assert parts["trace_id"] == tracing.trace_id_of(retrieve) and parts["sampled"]
    assert embedder._client.timeout == 7.0 and embedder._client.max_retries == 0


# ---------------------------------------------------------------- waiting for a trace and drawing it (no services)


def _span(span_id: str, service: str, parent: str | None = None, start: float = 0.0) -> dict[str, Any]:
    """A span shaped as Phoenix returns it."""
    return {"name": f"{service} work", "context": {"trace_id": "t" * 32, "span_id": span_id}, "parent_id": parent,
            "start_time": start, "end_time": start + 0.1, "attributes": {"service.name": service}}


class Arriving:
    """A fake span source: each read returns one more batch, as processes export into the trace store."""

    def __init__(self, *batches: list[dict[str, Any]]) -> None:
        self.batches = list(batches)
        self.reads = 0

    def __call__(self) -> list[dict[str, Any]]:
        self.reads += 1
        return [s for batch in self.batches[: self.reads] for s in batch]


def test_wait_for_spans_waits_for_every_service_and_then_for_the_count_to_settle() -> None:
    agent = [_span("a", "supervisor-agent"), _span("b", "supervisor-agent", "a")]
    source = Arriving(agent, agent[:0], [_span("g", spans.GATEWAY_SERVICE, "b")], [_span("m", "model-server", "b")],
                      [_span("e", "ray-serve", "b")], [_span("x", "model-server", "b")])
    wanted = {"supervisor-agent", spans.GATEWAY_SERVICE, "model-server"}
    found = spans.wait_for_spans("t" * 32, expected=2, services=wanted, timeout_s=10, quiet_s=0.2, poll_s=0.05,
                                 source=source)
    assert len(found) == 6, "all four services and the late model-server span: the count kept growing until then"
    assert spans.missing_services(found, wanted | {"ray-serve"}) == []
    assert source.reads >= 6 + 3, "reads after the last new span, for the quiet period"


def test_wait_for_spans_returns_what_arrived_at_the_timeout_and_names_the_missing_services() -> None:
    import time

    source = Arriving([_span("a", "supervisor-agent"), _span("g", spans.GATEWAY_SERVICE, "a")])
    wanted = ["supervisor-agent", spans.GATEWAY_SERVICE, "model-server", "ray-serve"]
    started = time.monotonic()
    found = spans.wait_for_spans("t" * 32, expected=1, services=wanted, timeout_s=0.4, quiet_s=0.1, poll_s=0.05,
                                 source=source)
    assert 0.4 <= time.monotonic() - started < 2.0
    assert len(found) == 2 and spans.missing_services(found, wanted) == ["model-server", "ray-serve"]
    assert spans.missing_services([], []) == [] and spans.missing_services([], ["ray-serve"]) == ["ray-serve"]


def test_waterfall_has_a_legend_with_every_process_in_its_bar_colour() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [_span("a", "supervisor-agent"), _span("g", spans.GATEWAY_SERVICE, "a", 0.01),
             _span("m", "model-server", "g", 0.02), _span("e", "ray-serve", "a", 0.005)]
    rows = spans.span_rows(found)
    fig = spans.waterfall(rows)
    try:
        ax = fig.axes[0]
        legend = ax.get_legend()
        assert legend is not None and legend.get_title().get_text() == "process"
        labels = [text.get_text() for text in legend.get_texts()]
        assert sorted(labels) == sorted({"supervisor-agent", spans.GATEWAY_SERVICE, "model-server", "ray-serve"})
        colour = dict(zip(labels, (h.get_facecolor() for h in legend.legend_handles)))
        for row, bar in zip(rows, ax.patches):
            assert bar.get_facecolor() == colour[row["service"]], row
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- the server span (ASGI middleware, in process)


def _asgi_call(app: Any, headers: dict[str, str], body: bytes) -> list[dict[str, Any]]:
    import asyncio

    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    return sent


def test_server_middleware_continues_the_callers_trace_with_model_and_tokens() -> None:
    async def model_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        body = b'{"model": "reasoning", "usage": {"prompt_tokens": 12, "completion_tokens": 5}}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    copy = tracing.SpanCopy()
    provider = TracerProvider()
    provider.add_span_processor(copy)
    app = otel.TracingMiddleware(model_app, "model-server", frozenset({"/v1/chat/completions"}),
                                    tracer=provider.get_tracer("t"))
    with provider.get_tracer("t").start_as_current_span("client") as client:
        headers = tracing.inject()
    _asgi_call(app, headers, b'{"model": "reasoning"}')
    _asgi_call(app, {}, b'{"model": "reasoning"}')  # no traceparent: no span
    server = [s for s in copy.spans if s.name.startswith("POST")]
    assert len(server) == 1 and server[0].kind == SpanKind.SERVER
    assert server[0].context.trace_id == client.get_span_context().trace_id
    assert server[0].parent.span_id == client.get_span_context().span_id
    assert server[0].attributes["gen_ai.request.model"] == "reasoning"
    assert server[0].attributes["gen_ai.usage.input_tokens"] == 12
    assert server[0].attributes["gen_ai.usage.output_tokens"] == 5


def test_ray_serve_tracing_is_a_no_op_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.ray_app import app as serving

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setattr(serving, "_tracer_state", {})
    with serving.traced("x", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) as span:
        serving.annotate(gen_ai__request__model="m")
    assert span is None


# ---------------------------------------------------------------- one trace id, client → gateway → model server


class Collector:
    """A real OTLP/HTTP receiver on a loopback port: decodes every ExportTraceServiceRequest it gets."""

    def __init__(self, port: int) -> None:
        self.spans: list[dict[str, Any]] = []
        received = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers.get("content-length") or 0)))
                for rs in request.resource_spans:
                    service = next((a.value.string_value for a in rs.resource.attributes
                                    if a.key == "service.name"), "")
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            received.append({"service": service, "name": s.name, "trace_id": s.trace_id.hex(),
                                             "span_id": s.span_id.hex(), "parent_id": s.parent_span_id.hex()})
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stored(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of one trace received so far, shaped as Phoenix returns them (what `spans` reads)."""
        return [{"name": s["name"], "parent_id": s["parent_id"] or None, "attributes": {"service.name": s["service"]},
                 "context": {"trace_id": s["trace_id"], "span_id": s["span_id"]}}
                for s in list(self.spans) if s["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def traced_stack(monkeypatch: pytest.MonkeyPatch, requires: tuple[str, ...]) -> Iterator[tuple[Target, Collector]]:
    """An isolated LiteLLM gateway in front of `requires`, exporting to a collector on the Phoenix port."""
    from helpers.layers.gateway import local as gateway_local

    if not gateway.proxy_installed():
        pytest.skip(f"the gateway's environment does not exist; create it with {gateway_local.INSTALL_COMMANDS}")
    settings = config.reload_settings()
    monkeypatch.setitem(stack.SERVICES, "gateway", dataclasses.replace(stack.SERVICES["gateway"], requires=requires))
    # the local gateway traces when a trace store is there to receive spans; the collector stands in for Phoenix
    monkeypatch.setattr(trace_store, "phoenix_installed", lambda: True)
    collector = Collector(settings.phoenix_port)
    try:
        stack.ensure("gateway")
        assert gateway.config_has_tracing(settings), "the config the proxy loaded switches tracing on"
        yield Target("local", settings), collector
    finally:
        stack.down()
        collector.close()


@pytest.fixture
def traced_chain(isolated_settings: config.Settings, no_langfuse, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[tuple[Target, Collector]]:
    """An isolated model server (smoke model) and LiteLLM gateway exporting to a collector on the Phoenix port."""
    monkeypatch.setenv("WORKSHOP_CHAT_MODEL", isolated_settings.smoke_model)
    # the chat route only: the gateway's embedding backend (Ray Serve) is not part of this chain
    with traced_stack(monkeypatch, requires=("model-server",)) as chain:
        yield chain


@pytest.fixture
def traced_embedding_chain(isolated_settings: config.Settings, no_langfuse, monkeypatch: pytest.MonkeyPatch
                           ) -> Iterator[tuple[Target, Collector]]:
    """An isolated Ray Serve app (and the model server its chat route needs) behind a traced LiteLLM gateway."""
    monkeypatch.setenv("WORKSHOP_CHAT_MODEL", isolated_settings.smoke_model)
    with traced_stack(monkeypatch, requires=("ray-serve",)) as chain:
        yield chain


@pytest.mark.services
def test_one_trace_id_from_the_client_through_the_gateway_to_the_model_server(traced_chain) -> None:
    t, collector = traced_chain
    dest = tracing.Destination("phoenix", f"http://127.0.0.1:{t.settings.phoenix_port}/v1/traces")
    provider = tracing.configure("test-agent", dest=dest, set_global=False)
    client = openai.OpenAI(base_url=t.gateway.base_url, api_key=t.gateway.key(),
                           http_client=tracing.http_client(timeout=60))
    with provider.get_tracer("t").start_as_current_span("agent") as agent:
        client.chat.completions.create(model="reasoning", max_tokens=4, temperature=0,
                                       extra_body={"cache": {"no-cache": True}},
                                       messages=[{"role": "user", "content": "Say hi."}])
    provider.force_flush()
    trace_id = tracing.trace_id_of(agent)
    deadline = __import__("time").monotonic() + 30
    while __import__("time").monotonic() < deadline:
        services = {s["service"] for s in collector.spans if s["trace_id"] == trace_id}
        if {"test-agent", "litellm-gateway", "model-server"} <= services:
            break
        __import__("time").sleep(0.3)
    ours = [s for s in collector.spans if s["trace_id"] == trace_id]
    assert {"test-agent", "litellm-gateway", "model-server"} <= {s["service"] for s in ours}, collector.spans
    model_span = next(s for s in ours if s["service"] == "model-server")
    assert model_span["parent_id"] in {s["span_id"] for s in ours}, "the model server's span hangs in this trace"
    other = [s for s in collector.spans if s["trace_id"] != trace_id and s["service"] == "model-server"]
    assert not other, "the model server records only requests whose caller is tracing"


@pytest.mark.services
def test_the_knowledge_embedder_joins_the_callers_trace_through_the_gateway_to_ray_serve(
        traced_embedding_chain) -> None:
    from helpers.layers.rag import knowledge

    t, collector = traced_embedding_chain
    dest = tracing.Destination("phoenix", f"http://127.0.0.1:{t.settings.phoenix_port}/v1/traces")
    provider = tracing.configure("test-agent", dest=dest, set_global=False)
    embedder = knowledge.Embedder(t.gateway_embeddings)
    text = f"Why is my GPU pod stuck in Pending? ({uuid.uuid4().hex})"  # new text: the gateway's cache cannot answer
    with provider.get_tracer("t").start_as_current_span("agent.retrieve") as retrieve:
        assert embedder.embed_one(text).shape == (embedder.dim,)
    provider.force_flush()
    trace_id = tracing.trace_id_of(retrieve)
    wanted = {"test-agent", spans.GATEWAY_SERVICE, "ray-serve"}
    ours = spans.wait_for_spans(trace_id, expected=3, services=wanted, timeout_s=30,
                                source=lambda: collector.stored(trace_id))
    assert spans.missing_services(ours, wanted) == [], collector.spans
    ids = {s["context"]["span_id"] for s in ours}
    ray = [s for s in ours if spans.service_of(s) == "ray-serve"]
    assert any(s["name"] == "POST /v1/embeddings" and s["parent_id"] in ids for s in ray), ray
    assert any(s["name"] == "Embedder.embed" for s in ray), "the ingress's call to the Embedder deployment"


# ---------------------------------------------------------------- Phoenix receives spans


@pytest.mark.services
@pytest.mark.skipif(not trace_store.phoenix_installed(),
                    reason=f"Phoenix is not installed: {trace_store.INSTALL_PHOENIX}")
def test_phoenix_receives_spans_and_returns_the_trace(isolated_settings: config.Settings, no_langfuse) -> None:
    try:
        stack.ensure("phoenix")
        provider = tracing.configure("phoenix-test", settings=isolated_settings, set_global=False)
        with provider.get_tracer("t").start_as_current_span("root") as root:
            with provider.get_tracer("t").start_as_current_span("child", attributes={"gen_ai.usage.input_tokens": 7}):
                pass
        provider.force_flush()
        found = spans.wait_for_spans(tracing.trace_id_of(root), 2, isolated_settings)
        rows = spans.span_rows(found)
        assert [(r["span"], r["depth"]) for r in rows] == [("root", 0), ("child", 1)]
        assert rows[1]["input_tokens"] == 7 and rows[0]["service"] == "phoenix-test"
        import matplotlib

        matplotlib.use("Agg")
        assert len(spans.waterfall(rows).axes[0].patches) == 2
    finally:
        stack.stop("phoenix")


# ---------------------------------------------------------------- eks: Langfuse and Prometheus manifests


@pytest.mark.parametrize("target", m.TARGETS)
def test_chapter_manifests_pass_validation_and_policy(target: str, isolated_settings: config.Settings) -> None:
    items = observability.render(Target(target, isolated_settings))
    assert {i.kind for i in items} == {"Ingress"} and m.check(items) == []


def test_internet_facing_langfuse_needs_tls(eks_t: Target) -> None:
    public = observability.render(eks_t, overrides={"ingress": {"scheme": "internet-facing"}})
    assert "no-public-plaintext-lb" in {f.rule for f in m.check(public)}
    tls = observability.render(eks_t, overrides={"ingress": {"scheme": "internet-facing",
                                                             "certificate_arn": "arn:aws:acm:us-west-2:1:certificate/x"}})
    assert m.check(tls) == []


def test_prometheus_scrapes_through_the_podmonitors_only(eks_t: Target) -> None:
    """One story: kube-prometheus-stack's PodMonitors (chapter 01's operators) scrape vLLM and Ray; chapter 05
    renders no prometheus.io/* Service, which that chart would never read."""
    from helpers.infra import k8s

    assert not [i.ref for i in observability.render(eks_t) if i.kind == "Service"]
    assert not list((m.MANIFESTS_DIR / "05-observability").glob("metrics*"))
    rendered = [i for chapter in ("02-vllm", "03-ray-serve") for i in eks_t.render(chapter)]
    rows = k8s.monitor_coverage(rendered, k8s.monitors(eks_t.settings.namespace))
    assert {r["what"] for r in rows} >= {"vLLM", "Ray head"} and all(r["scraped by"] in ("vllm", "ray") for r in rows)


def test_langfuse_values_are_pinned_and_hold_no_secret(eks_t: Target) -> None:
    values = yaml.safe_load(observability.values_text(eks_t))
    secret_name = observability.parameters()["langfuse"]["secret"]
    init_env = values["langfuse"]["web"]["pod"]["additionalEnv"]  # headless init: the web pods only
    refs = [e["valueFrom"]["secretKeyRef"] for e in init_env]
    assert {r["name"] for r in refs} == {secret_name}
    assert {r["key"] for r in refs} >= {"LANGFUSE_INIT_ORG_ID", "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
                                         "LANGFUSE_INIT_PROJECT_SECRET_KEY"}
    assert all("value" not in e for e in init_env) and "additionalEnv" not in values["langfuse"]
    command = observability.helm_command("values.yaml")
    assert command[command.index("--version") + 1] == "2.0.0"  # Langfuse 4 (tests/test_charts.py renders it)
    assert values["langfuse"]["features"]["telemetryEnabled"] is False


def test_langfuse_secret_is_generated_and_kept() -> None:
    first, second = observability.langfuse_secret(), observability.langfuse_secret()
    a, b = first["stringData"], second["stringData"]
    assert a["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"].startswith("pk-lf-") and a["LANGFUSE_INIT_PROJECT_SECRET_KEY"] != \
        b["LANGFUSE_INIT_PROJECT_SECRET_KEY"]
    assert len(a["ENCRYPTION_KEY"]) == 64
    kept = observability.langfuse_secret(existing=a)["stringData"]
    assert kept == a
    keys = observability.keys_secret(first, "llm-workshop")["stringData"]
    assert keys["LANGFUSE_SECRET_KEY"] == a["LANGFUSE_INIT_PROJECT_SECRET_KEY"]
    assert keys["LANGFUSE_HOST"] == "http://langfuse-web.langfuse.svc:3000"
