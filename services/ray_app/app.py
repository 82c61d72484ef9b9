"""The Ray Serve application: OpenAI-compatible embeddings and chat from llama.cpp, locally and on KubeRay.

One application, three deployments:

    HTTP ─▶ Serve proxy ─▶ OpenAIIngress (FastAPI: auth, validation, OpenAI JSON)
                               ├─▶ Embedder   (@serve.batch: texts from many requests, one llama.cpp call)
                               └─▶ ChatModel  (llama.cpp chat completions, optional streaming)

On a laptop the chat route has no ChatModel replica: `chat_upstream_url` points it at the llama.cpp server the
local stack already runs (the chat model would otherwise sit in memory twice), and the ingress forwards chat
requests there (ChatUpstream). On EKS the RayService keeps its own small ChatModel.

The same `app_builder(args)` runs under `serve.run` on a laptop (services.ray_app.local_launcher) and as the
`import_path` of a KubeRay RayService (manifests/03-ray-serve/). Everything the app needs arrives in `args`
(model paths, served names, limits) or in the environment (the API key, by the name in
`args.api_key_env`); the key is never in the code, the args or the Serve config.

Only the standard library, FastAPI, pydantic and Ray are imported, so the module runs in the Ray container
image without the workshop's library; the laptop's arguments come from helpers.layers.ray.local.

Why one module: it is the whole Serve application, the one file the Ray image copies (its .dockerignore) and
KubeRay imports (services.ray_app.app:app_builder); its parts (arguments, deployments, ingress) only make sense
together, and a reader follows a request through it from top to bottom.
"""


import asyncio
import base64
import hmac
import json
import logging
import math
import os
import struct
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, Literal

# Importing Ray inside a Jupyter kernel without ipywidgets prints two notices (a logged "Missing packages"
# and tqdm's IProgress warning) that say nothing about this app: keep them out of notebook outputs.
logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message="IProgress not found", category=Warning)

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.handle import DeploymentHandle  # noqa: E402

API_KEY_ENV = "WORKSHOP_SERVE_API_KEY"  # default name of the variable holding the bearer key
LOOPBACK_ENV = "WORKSHOP_SERVE_LOOPBACK_ONLY"  # set by services.ray_app.local_launcher: bind replica servers to 127.0.0.1
MAX_BODY_BYTES = 2_000_000  # a request body larger than this is refused with 413 before it is parsed
OWNER = "llm-eks-workshop"
TOKENS_PER_CALL = 256  # tokens per llama.cpp embedding call inside a batch (see Embedder._embed_texts)

# Autoscaling of the Embedder when nothing overrides it (the RayService and the local launcher both do).
DEFAULT_EMBEDDING_AUTOSCALING: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 4,
    "upscale_delay_s": 10.0,
    "downscale_delay_s": 60.0,
}


# ---------------------------------------------------------------- arguments


class AppArgs(BaseModel):
    """What the application needs: model files, served names, limits, where to read the key."""

    model_config = ConfigDict(extra="forbid")

    embedding_model_path: str = Field(description="GGUF file of the embedding model")
    embedding_model_name: str = Field("embedding", description="name clients ask for (OpenAI `model`)")
    embedding_context: int = Field(512, ge=8, description="tokens per input the embedding model accepts")
    chat_model_path: str | None = Field(None, description="GGUF file of the chat model (a ChatModel replica)")
    chat_model_name: str = "chat"
    chat_upstream_url: str | None = Field(None, description="instead of a ChatModel replica: an OpenAI-compatible "
                                          "server (base URL, .../v1) the chat route forwards to; neither: no chat")
    chat_upstream_model: str | None = Field(None, description="the model name to ask the upstream for "
                                            "(default: chat_model_name)")
    chat_upstream_key_env: str | None = Field(None, description="environment variable holding the upstream's key")
    chat_context: int = Field(2048, ge=64)
    api_key_env: str = Field(API_KEY_ENV, description="environment variable that holds the bearer key")
    max_inputs: int = Field(256, ge=1, description="texts per embeddings request")
    max_input_chars: int = Field(8192, ge=1, description="characters per text, checked before tokenizing")
    max_batch_size: int = Field(32, ge=1, description="texts per llama.cpp call (@serve.batch)")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="how long a batch waits to fill up (0: it takes "
                                        "what is queued when the model is free; batches still merge under load)")
    embedding_cpus: float = Field(1, gt=0, description="CPUs per Embedder replica = its llama.cpp threads")
    chat_cpus: float = Field(1, gt=0, description="CPUs per ChatModel replica = its llama.cpp threads")
    embedding_autoscaling: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_EMBEDDING_AUTOSCALING))

    @model_validator(mode="after")
    def one_chat_source(self) -> "AppArgs":
        """A chat route comes from a ChatModel replica or from an upstream server, not both."""
        if self.chat_model_path and self.chat_upstream_url:
            raise ValueError("give chat_model_path (a ChatModel replica) or chat_upstream_url (forward), not both")
        return self


class OpenAIError(Exception):
    """An error the client should see as an OpenAI-style JSON body with an HTTP status."""

    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_

    def body(self) -> dict[str, Any]:
        """The JSON body: {"error": {"message", "type", "code", "param"}}."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}


def error_response(err: OpenAIError) -> JSONResponse:
    """An OpenAIError as a FastAPI response."""
    return JSONResponse(err.body(), status_code=err.status)


# ---------------------------------------------------------------- helpers used inside replicas


def replica_threads() -> int:
    """llama.cpp threads for this replica: the CPUs Ray assigned to it (ray_actor_options num_cpus), at least 1."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, math.floor(cpus))


def bind_replica_servers_to_loopback() -> None:
    """On a laptop, keep the replica's internal gRPC server on 127.0.0.1 (Ray 2.60 binds it to all interfaces).

    Ray Serve starts one inter-deployment gRPC server per replica on "[::]:0" right after the
    constructor returns. When services.ray_app.local_launcher sets WORKSHOP_SERVE_LOOPBACK_ONLY=1, this rewrites
    that address to 127.0.0.1 in this replica process only; on KubeRay the variable is unset and
    nothing changes (pods must reach each other).
    """
    if os.environ.get(LOOPBACK_ENV) != "1":
        return
    try:
        from ray.serve._private import replica as replica_module
    except ImportError:  # a Ray without that module: nothing to patch
        return
    original = getattr(replica_module, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_workshop_loopback", False):
        return

    def loopback_only(server: Any, address: str) -> int:
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    loopback_only._workshop_loopback = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = loopback_only


def replica_id() -> str:
    """A short id of this replica (for the batching statistics)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (unit use): the process id
        return f"pid{os.getpid()}"


def float32_base64(vector: list[float]) -> str:
    """A vector as OpenAI's base64 encoding: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def token_counts(llm: Any, texts: list[str]) -> list[int]:
    """Tokens per text, as the embedding call will see them."""
    return [len(llm.tokenize(t.encode("utf-8"))) for t in texts]


def embed_grouped(llm: Any, texts: list[str], counts: list[int] | None = None,
                  tokens_per_call: int = TOKENS_PER_CALL) -> list[list[float]]:
    """Normalised embeddings of texts, in llama.cpp calls of about `tokens_per_call` tokens each.

    In llama.cpp a BERT model attends over every token of a call, so the cost of one call grows with
    the square of its tokens: a few medium calls beat one huge call and beat one call per text.
    """
    counts = counts if counts is not None else token_counts(llm, texts)
    vectors: list[list[float]] = []
    group: list[str] = []
    used = 0
    for text, n in zip(texts, counts):
        if group and used + n > tokens_per_call:
            vectors += llm.embed(group, normalize=True, truncate=False)
            group, used = [], 0
        group.append(text)
        used += n
    if group:
        vectors += llm.embed(group, normalize=True, truncate=False)
    return vectors


# ---------------------------------------------------------------- deployments


@serve.deployment(name="Embedder", max_ongoing_requests=64, ray_actor_options={"num_cpus": 1},
                  autoscaling_config=DEFAULT_EMBEDDING_AUTOSCALING)


class Embedder:
    """Sentence embeddings from a llama.cpp GGUF model; texts of concurrent requests are batched together."""

    def __init__(self, model_path: str, context: int, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        bind_replica_servers_to_loopback()
        from llama_cpp import Llama

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"Embedding model not found at {model_path}: fetch it (python -m helpers.layers.models "
                                    "fetch) or bake it into the image (manifests/03-ray-serve/image/Dockerfile).")
        self.threads = replica_threads()
        self.context = context
        self.llm = Llama(model_path=model_path, embedding=True, n_ctx=context, n_batch=context, n_ubatch=context,
                         n_threads=self.threads, n_threads_batch=self.threads, verbose=False)
        self.dimension = int(self.llm.n_embd())
        self.embed.set_max_batch_size(max_batch_size)
        self.embed.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.replica = replica_id()
        self.batches = 0

    def info(self) -> dict[str, Any]:
        """Dimension, threads and replica id (answers only when the model is loaded)."""
        return {"dimension": self.dimension, "threads": self.threads, "replica": self.replica}

    def _embed_texts(self, texts: list[str], counts: list[int]) -> list[list[float]]:
        return embed_grouped(self.llm, texts, counts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0, batch_size_fn=lambda items: sum(map(len, items)))
    async def embed(self, requests: list[list[str]]) -> list[dict[str, Any]]:
        """Embed the texts of several requests in one llama.cpp call; one result (or error) per request."""
        self.batches += 1
        batch_id = f"{self.replica}:{self.batches}"
        size = sum(len(texts) for texts in requests)
        results: list[dict[str, Any]] = []
        todo: list[str] = []
        todo_counts: list[int] = []
        for texts in requests:
            counts = token_counts(self.llm, texts)
            too_long = [i for i, n in enumerate(counts) if n > self.context]
            if too_long:
                i = too_long[0]
                results.append({"error": {
                    "status": 400, "code": "context_length_exceeded",
                    "message": f"input[{i}] has {counts[i]} tokens; this embedding model accepts at most "
                               f"{self.context}. Split the text into smaller chunks.",
                }})
            else:
                results.append({"tokens": sum(counts), "start": len(todo), "count": len(texts)})
                todo.extend(texts)
                todo_counts.extend(counts)
        vectors = await asyncio.to_thread(self._embed_texts, todo, todo_counts) if todo else []
        for result in results:
            if "error" not in result:
                start, count = result.pop("start"), result.pop("count")
                result.update(vectors=vectors[start:start + count], batch_id=batch_id, batch_size=size,
                              batch_requests=len(requests), threads=self.threads)
        return results


@serve.deployment(name="ChatModel", max_ongoing_requests=8, ray_actor_options={"num_cpus": 1})
class ChatModel:
    """Chat completions from a llama.cpp GGUF model, one generation at a time per replica."""

    def __init__(self, model_path: str, context: int) -> None:
        bind_replica_servers_to_loopback()
        from llama_cpp import Llama

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"Chat model not found at {model_path}.")
        self.threads = replica_threads()
        self.llm = Llama(model_path=model_path, n_ctx=context, n_threads=self.threads,
                         n_threads_batch=self.threads, verbose=False)
        self.lock = asyncio.Lock()

    def info(self) -> dict[str, Any]:
        """Threads of this replica (answers only when the model is loaded)."""
        return {"threads": self.threads}

    @staticmethod
    def _too_long(exc: Exception) -> dict[str, Any] | None:
        text = str(exc)
        if "exceed context window" in text:
            return {"error": {"status": 400, "code": "context_length_exceeded",
                              "message": f"The prompt does not fit the model's context: {text}"}}
        return None

    async def complete(self, params: dict[str, Any]) -> dict[str, Any]:
        """One non-streaming completion (OpenAI chat.completion dict) or {"error": ...}."""
        async with self.lock:
            try:
                return await asyncio.to_thread(self.llm.create_chat_completion, **params)
            except ValueError as exc:
                if (err := self._too_long(exc)) is not None:
                    return err
                raise

    async def stream(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streaming completion: yields OpenAI chat.completion.chunk dicts (or one {"error": ...})."""
        async with self.lock:
            try:
                chunks = await asyncio.to_thread(self.llm.create_chat_completion, **params, stream=True)
                done = object()
                while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
                    yield chunk
            except ValueError as exc:
                if (err := self._too_long(exc)) is not None:
                    yield err
                    return
                raise


class ChatUpstream:
    """The chat route without a model of its own: forwards to an OpenAI-compatible server (locally: llama.cpp's).

    Not a deployment: the ingress calls it directly, so no replica process and no second copy of a model exist.
    Answers have the same shapes as ChatModel's: a chat.completion dict, chunks, or {"error": ...}.
    """

    def __init__(self, base_url: str, model: str, key_env: str | None, timeout: float = 600.0) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        key = os.environ.get(key_env, "") if key_env else ""
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout
        self._client: Any = None

    def client(self) -> Any:
        """One pooled HTTP client per ingress replica (httpx is imported only where this route is used)."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    def error(self, status: int, detail: str) -> dict[str, Any]:
        """An upstream failure as the ingress raises it: 4xx passed on, anything else a 502/503 naming the upstream."""
        try:
            body = json.loads(detail)
            message = (body.get("error") or {}).get("message") or body.get("detail") or detail
        except (ValueError, AttributeError):
            message = detail
        if 400 <= status < 500:
            return {"error": {"status": status, "code": "upstream_rejected", "message": str(message)[:500]}}
        code = 503 if status == 0 else 502
        return {"error": {"status": code, "code": "upstream_unavailable",
                          "message": f"The chat model server at {self.url} failed: {str(message)[:300]}. Is it "
                                     "running? Locally: `python -m helpers.local.stack status`."}}

    async def complete(self, params: dict[str, Any]) -> dict[str, Any]:
        """One non-streaming completion from the upstream."""
        import httpx

        try:
            reply = await self.client().post(self.url, json={**params, "model": self.model},
                                             headers={**self.headers, **trace_headers()})
        except httpx.HTTPError as exc:
            return self.error(0, f"{type(exc).__name__}: {exc}")
        return reply.json() if reply.status_code == 200 else self.error(reply.status_code, reply.text)

    async def stream(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streaming completion from the upstream: its chunks, parsed (or one {"error": ...})."""
        import httpx

        try:
            async with self.client().stream("POST", self.url, json={**params, "model": self.model, "stream": True},
                                            headers={**self.headers, **trace_headers()}) as reply:
                if reply.status_code != 200:
                    yield self.error(reply.status_code, (await reply.aread()).decode(errors="replace"))
                    return
                async for line in reply.aiter_lines():
                    if line.startswith("data: ") and line.strip() != "data: [DONE]":
                        yield json.loads(line[len("data: "):])
        except httpx.HTTPError as exc:
            yield self.error(0, f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- requests


class EmbeddingRequest(BaseModel):
    """OpenAI POST /v1/embeddings body (text input only)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class ChatMessage(BaseModel):
    """One message of a chat."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """OpenAI POST /v1/chat/completions body (the parameters llama.cpp supports)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Validate a JSON body, turning every problem into a 400 with the offending field named."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise OpenAIError(400, f"Invalid request: {where}: {first.get('msg')}", "invalid_request") from None


def embedding_texts(body: EmbeddingRequest, max_inputs: int, max_chars: int) -> list[str]:
    """The request's texts, or a 400 for empty, token-array, too many or too long inputs."""
    raw = body.input
    texts = [raw] if isinstance(raw, str) else list(raw)
    if not texts:
        raise OpenAIError(400, "'input' is empty: send a string or a list of at least one non-empty string.",
                          "empty_input")
    if not all(isinstance(t, str) for t in texts):
        raise OpenAIError(400, "Token-id arrays are not supported by this server: send text.", "unsupported_input")
    if len(texts) > max_inputs:
        raise OpenAIError(400, f"'input' has {len(texts)} texts; at most {max_inputs} per request. "
                          "Send them in several requests.", "too_many_inputs")
    for i, text in enumerate(texts):
        if not text.strip():
            raise OpenAIError(400, f"input[{i}] is empty: every text must contain something to embed.",
                              "empty_input")
        if len(text) > max_chars:
            raise OpenAIError(400, f"input[{i}] has {len(text)} characters; at most {max_chars} per text. "
                              "Split it into smaller chunks.", "input_too_large")
    return texts


# ---------------------------------------------------------------- tracing (chapter 05)
# A request that arrives with a W3C `traceparent` gets a SERVER span in the ingress and a child span per
# deployment call, exported over OTLP/HTTP where OTEL_EXPORTER_OTLP_TRACES_ENDPOINT points (helpers.layers.observability.tracing
# sets it locally; on EKS the Ray pods' env). Without that variable, or without the OpenTelemetry SDK in the
# image, every helper below is a no-op.

_tracer_state: dict[str, Any] = {}


def replica_tracer() -> Any | None:
    """This replica's tracer, built from the OTEL_* variables on first use (None when tracing is off)."""
    if "tracer" not in _tracer_state:
        _tracer_state["tracer"] = None
        if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor
            except ImportError:  # an image without the SDK: no tracing, no failure
                return None
            provider = TracerProvider(resource=Resource.create({"service.name": "ray-serve"}))  # sampler: env
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=5)))
            _tracer_state["tracer"] = provider.get_tracer("llm-eks-workshop.serving")
    return _tracer_state["tracer"]


@contextmanager
def traced(name: str, headers: dict[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span: a SERVER span continuing the caller's traceparent when headers are given, else a child of the current one."""
    tracer = replica_tracer()
    if tracer is None or (headers is not None and "traceparent" not in headers):
        yield None
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract(headers) if headers is not None else None
    kind = SpanKind.SERVER if headers is not None else SpanKind.INTERNAL
    with tracer.start_as_current_span(name, context=context, kind=kind) as span:
        span.set_attribute("service.name", "ray-serve")
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        yield span


def annotate(**attributes: Any) -> None:
    """Add attributes (model, token counts) to the current span, if there is one."""
    try:
        from opentelemetry import trace
    except ImportError:
        return
    span = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None and span.is_recording():
            span.set_attribute(key.replace("__", "."), value)


def trace_headers() -> dict[str, str]:
    """The current span's `traceparent`, for a call to another server (empty when tracing is off)."""
    if replica_tracer() is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


# ---------------------------------------------------------------- the ingress

api = FastAPI(title="llm-eks-workshop Ray Serve: OpenAI-compatible embeddings and chat",
              docs_url=None, redoc_url=None, openapi_url=None)


@api.middleware("http")
async def _trace_requests(request: Request, call_next: Any) -> Any:
    with traced(f"{request.method} {request.url.path}", {k.lower(): v for k, v in request.headers.items()},
                **{"http.route": request.url.path}) as span:
        response = await call_next(request)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
        return response


@api.exception_handler(OpenAIError)
async def _openai_error(_request: Request, exc: OpenAIError) -> JSONResponse:
    return error_response(exc)


@api.exception_handler(Exception)
async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    # A failure inside a replica (a crashed model, a timeout) is a 500 with an OpenAI body, never a 200.
    return error_response(OpenAIError(500, f"The server failed to answer: {type(exc).__name__}. Retry; if it "
                                      "persists, read the ray-serve log.", "internal_error", "server_error"))


@serve.deployment(name="OpenAIIngress", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class OpenAIIngress:
    """The HTTP face of the app: bearer auth, OpenAI request/response shapes, clear 4xx errors."""

    def __init__(self, embedder: DeploymentHandle, chat: DeploymentHandle | None, args: dict[str, Any]) -> None:
        bind_replica_servers_to_loopback()
        self.args = AppArgs.model_validate(args)
        key = os.environ.get(self.args.api_key_env, "")
        if len(key) < 16:
            raise RuntimeError(
                f"The environment variable {self.args.api_key_env} must hold the API key (16+ characters). "
                "Locally services.ray_app.local_launcher sets it from settings.serve_api_key; on KubeRay it comes from "
                "the Secret referenced in the RayService pod templates."
            )
        self._key = key.encode()
        self.embedder = embedder
        self.chat = chat
        self.upstream = None
        if self.args.chat_upstream_url:
            self.upstream = ChatUpstream(self.args.chat_upstream_url,
                                         self.args.chat_upstream_model or self.args.chat_model_name,
                                         self.args.chat_upstream_key_env)
        self.created = int(time.time())
        self.in_flight = {"embeddings": 0, "chat": 0}
        self.batches: OrderedDict[str, tuple[int, int]] = OrderedDict()  # batch id -> (texts, requests)
        self.requests = {"embeddings": 0, "chat": 0, "rejected": 0}
        self._status_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self._app_status = "UNKNOWN"
        self.embedder_threads: int | None = None

    # ------------------------------------------------------------ plumbing

    def authorize(self, request: Request) -> None:
        """401 unless the request carries `Authorization: Bearer <the key>` (or `X-Api-Key: <the key>`).

        X-Api-Key exists for calls through the Kubernetes API server's service proxy, which consumes the
        Authorization header for the cluster's own authentication.
        """
        if request.headers.get("x-api-key"):
            scheme, token = "bearer", request.headers["x-api-key"]
        else:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.requests["rejected"] += 1
            raise OpenAIError(401, "Missing API key: send the header 'Authorization: Bearer <key>' "
                              "(the workshop's serve_api_key).", "invalid_api_key")
        if not hmac.compare_digest(token.strip().encode(), self._key):
            self.requests["rejected"] += 1
            raise OpenAIError(401, "Incorrect API key provided.", "invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        """The raw body, refusing oversize bodies with 413 before reading them whole."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise OpenAIError(413, f"Request body of {declared} bytes is larger than {MAX_BODY_BYTES}.",
                              "request_too_large")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise OpenAIError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes.", "request_too_large")
        return raw

    def model_card(self, name: str) -> dict[str, Any]:
        """One entry of /v1/models."""
        return {"id": name, "object": "model", "created": self.created, "owned_by": OWNER}

    async def deployment_status(self) -> dict[str, Any]:
        """Replica states of this application's deployments (cached for half a second)."""
        cached_at, cached = self._status_cache
        if time.monotonic() - cached_at < 0.5:
            return cached

        def read() -> dict[str, Any]:
            app_name = serve.get_replica_context().app_name
            app = serve.status().applications[app_name]
            self._app_status = str(getattr(app.status, "value", app.status))
            return {name: {"status": str(dep.status.value if hasattr(dep.status, "value") else dep.status),
                           "trigger": str(getattr(dep.status_trigger, "value", dep.status_trigger)),
                           "replicas": {str(getattr(k, "value", k)): v for k, v in dep.replica_states.items()}}
                    for name, dep in app.deployments.items()}

        status = await asyncio.to_thread(read)
        self._status_cache = (time.monotonic(), status)
        return status

    async def application_status(self) -> str:
        """This application's status as Serve reports it (DEPLOYING, RUNNING, ...)."""
        await self.deployment_status()
        return self._app_status

    # ------------------------------------------------------------ routes

    @api.get("/health")
    async def health(self) -> JSONResponse:
        """200 when Serve reports the app RUNNING and the models answer (no key needed, reveals nothing else)."""
        try:
            app_status = await asyncio.wait_for(self.application_status(), timeout=5)
            await asyncio.wait_for(self.embedder.info.remote(), timeout=5)
            if self.chat is not None:
                await asyncio.wait_for(self.chat.info.remote(), timeout=5)
        except Exception:  # any failure to answer means not healthy
            app_status = "UNAVAILABLE"
        if app_status != "RUNNING":
            return JSONResponse({"status": app_status.lower()}, status_code=503)
        return JSONResponse({"status": "ok"})

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        """The served model names."""
        self.authorize(request)
        chat = [self.args.chat_model_name] if self.chat is not None or self.upstream is not None else []
        names = [self.args.embedding_model_name] + chat
        return {"object": "list", "data": [self.model_card(n) for n in names]}

    @api.get("/stats")
    async def stats(self, request: Request) -> dict[str, Any]:
        """What the app saw: batch sizes, in-flight requests, replicas per deployment."""
        self.authorize(request)
        sizes = [texts for texts, _ in self.batches.values()]
        histogram: dict[int, int] = {}
        for s in sizes:
            histogram[s] = histogram.get(s, 0) + 1
        return {
            "time": time.time(),
            "requests": dict(self.requests),
            "in_flight": dict(self.in_flight),
            "batches": {"count": len(sizes), "recent_sizes": sizes[-50:],
                        "size_histogram": dict(sorted(histogram.items())),
                        "recent_requests_per_batch": [r for _, r in list(self.batches.values())[-50:]]},
            "embedder_threads": self.embedder_threads,
            "deployments": await self.deployment_status(),
        }

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> JSONResponse:
        """OpenAI embeddings: texts go to the Embedder in chunks of at most max_batch_size."""
        self.authorize(request)
        body = parse_body(await self.read_body(request), EmbeddingRequest)
        if body.model != self.args.embedding_model_name:
            raise OpenAIError(404, f"The model '{body.model}' does not exist here; embeddings are served as "
                              f"'{self.args.embedding_model_name}'.", "model_not_found")
        texts = embedding_texts(body, self.args.max_inputs, self.args.max_input_chars)
        size = self.args.max_batch_size
        chunks = [texts[i:i + size] for i in range(0, len(texts), size)]
        self.in_flight["embeddings"] += 1
        self.requests["embeddings"] += 1
        try:
            with traced("Embedder.embed", **{"gen_ai.request.model": body.model, "workshop.texts": len(texts)}):
                results = await asyncio.gather(*(self.embedder.embed.remote(chunk) for chunk in chunks))
        finally:
            self.in_flight["embeddings"] -= 1
        vectors: list[list[float]] = []
        tokens = 0
        for result in results:
            if "error" in result:
                err = result["error"]
                raise OpenAIError(err["status"], err["message"], err["code"])
            vectors += result["vectors"]
            tokens += result["tokens"]
            self.batches[result["batch_id"]] = (result["batch_size"], result["batch_requests"])
            self.embedder_threads = result["threads"]
            while len(self.batches) > 2000:
                self.batches.popitem(last=False)
        annotate(gen_ai__request__model=body.model, gen_ai__usage__input_tokens=tokens)
        if body.dimensions is not None and vectors and body.dimensions != len(vectors[0]):
            raise OpenAIError(400, f"dimensions={body.dimensions} is not supported: this model returns "
                              f"{len(vectors[0])}-d vectors (omit 'dimensions').", "unsupported_dimensions")
        encode = float32_base64 if body.encoding_format == "base64" else (lambda v: v)
        return JSONResponse({
            "object": "list",
            "model": self.args.embedding_model_name,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(self, request: Request) -> JSONResponse | StreamingResponse:
        """OpenAI chat completions (non-streaming, or server-sent events with stream=true)."""
        self.authorize(request)
        body = parse_body(await self.read_body(request), ChatRequest)
        has_chat = self.chat is not None or self.upstream is not None
        if not has_chat or body.model != self.args.chat_model_name:
            served = f"'{self.args.chat_model_name}'" if has_chat else "no chat model"
            raise OpenAIError(404, f"The model '{body.model}' does not exist here; this app serves {served}.",
                              "model_not_found")
        if not body.messages:
            raise OpenAIError(400, "'messages' is empty: send at least one message.", "empty_input")
        params: dict[str, Any] = {
            "messages": [m.model_dump(exclude_none=True) for m in body.messages],
            "max_tokens": body.max_completion_tokens or body.max_tokens or 256,
        }
        for name in ("temperature", "top_p", "stop", "seed"):
            if (value := getattr(body, name)) is not None:
                params[name] = value
        self.requests["chat"] += 1
        if body.stream:
            return StreamingResponse(self._sse(params), media_type="text/event-stream")
        self.in_flight["chat"] += 1
        try:
            with traced("ChatModel.complete" if self.upstream is None else "ChatUpstream.complete",
                        **{"gen_ai.request.model": body.model}):
                reply = await (self.upstream.complete(params) if self.upstream is not None
                               else self.chat.complete.remote(params))
        finally:
            self.in_flight["chat"] -= 1
        if "error" in reply:
            err = reply["error"]
            raise OpenAIError(err["status"], err["message"], err["code"])
        reply["model"] = self.args.chat_model_name
        usage = reply.get("usage") or {}
        annotate(gen_ai__request__model=body.model, gen_ai__usage__input_tokens=usage.get("prompt_tokens"),
                 gen_ai__usage__output_tokens=usage.get("completion_tokens"))
        return JSONResponse(reply)

    async def _sse(self, params: dict[str, Any]) -> AsyncIterator[str]:
        self.in_flight["chat"] += 1
        try:
            chunks = (self.upstream.stream(params) if self.upstream is not None
                      else self.chat.options(stream=True).stream.remote(params))
            async for chunk in chunks:
                if "error" in chunk:
                    yield f"data: {json.dumps(OpenAIError(**_error_args(chunk['error'])).body())}\n\n"
                    return
                chunk["model"] = self.args.chat_model_name
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.in_flight["chat"] -= 1


def _error_args(err: dict[str, Any]) -> dict[str, Any]:
    return {"status": err["status"], "message": err["message"], "code": err["code"]}


# ---------------------------------------------------------------- building the application


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The Serve application (the `import_path` of the RayService: services.ray_app.app:app_builder)."""
    cfg = AppArgs.model_validate(args)
    embedder = Embedder.options(
        ray_actor_options={"num_cpus": cfg.embedding_cpus},
        autoscaling_config=cfg.embedding_autoscaling,
        max_ongoing_requests=max(64, 2 * cfg.max_batch_size),
    ).bind(cfg.embedding_model_path, cfg.embedding_context, cfg.max_batch_size, cfg.batch_wait_timeout_s)
    chat = None
    if cfg.chat_model_path:
        chat = ChatModel.options(ray_actor_options={"num_cpus": cfg.chat_cpus}).bind(
            cfg.chat_model_path, cfg.chat_context)
    return OpenAIIngress.bind(embedder, chat, cfg.model_dump())
