"""The agent API (notebook 08): FastAPI around the supervisor, behind a bearer key.

    POST /query   {"question": "...", "routing": "code"|"model", "stream": false}
                                       -> {"answer", "route", "sources", "relevance", "timings", "steps", ...}
    POST /query   {"question": "...", "stream": true}
                                       -> text/event-stream: route, sources, draft/token text, relevance,
                                          route_changed, final | error (helpers.layers.agent.streaming)
    POST /ingest  {}                   -> the ingestion report (knowledge/ -> the vector store, idempotent)
    GET  /health                       -> {"status": "ok"} (no key needed: probes call it)

Errors are never HTTP 200 with a hidden failure: bad input gets 4xx with a message (401 no/wrong key, 422
empty/too long/wrong type), a failing dependency gets 502/503 naming it ({"error": ..., "dependency": "gateway"}).
A stream starts only once the first event is there (after retrieval), so a dependency that fails before it still
gets its 5xx; one that fails later ends the stream with an `error` event carrying the same fields and status.
The supervisor is synchronous (model calls take seconds), so every call runs in a thread pool: the event loop
keeps serving /health and other requests meanwhile.

    python -m services.agent_api --host 127.0.0.1 --port 18089     # what helpers.local.stack's `agent-api` runs
"""

from __future__ import annotations

import argparse
import hmac
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any, Callable, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.concurrency import run_in_threadpool

from helpers.config import get_settings

API_KEY_ENV = "WORKSHOP_AGENT_API_KEY"
MAX_QUESTION_CHARS = 2000  # the same limit as helpers.layers.agent.supervisor.MAX_QUESTION_CHARS
MAX_SAVE_PATH_CHARS = 200


class QueryRequest(BaseModel):
    """The body of POST /query."""

    model_config = ConfigDict(extra="forbid")
    question: StrictStr = Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                                description=f"the question, 1 to {MAX_QUESTION_CHARS} characters")
    save_as: StrictStr | None = Field(default=None, max_length=MAX_SAVE_PATH_CHARS,
                                      description="a path inside the MCP workspace to save the answer to")
    routing: Literal["code", "model"] | None = Field(
        default=None, description="who routes: code (default locally) or the model (agents as tools, default on eks)")
    stream: StrictBool = Field(default=False, description="answer with server-sent events as the answer is written")


class QueryResponse(BaseModel):
    """The body POST /query returns."""

    answer: str
    route: str
    sources: list[dict[str, Any]]
    relevance: dict[str, Any]
    timings: dict[str, float]
    trace_id: str | None
    saved: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = []
    first_token_s: float | None = None
    routing: str = "code"
    tools: list[str] = []
    cache_hits: int = 0  # model calls the gateway answered from its response cache


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies must not buffer the events


def error_response(data: dict[str, Any]) -> JSONResponse:
    """The JSON error body (error, dependency) with the status an `error` event carries."""
    return JSONResponse(status_code=data["status"], content={k: v for k, v in data.items() if k != "status"})


def create_app(supervisor_factory: Callable[[], Any] | None = None, api_key: str | None = None,
               ingest: Callable[[Any], dict[str, Any]] | None = None) -> FastAPI:
    """The FastAPI app; `supervisor_factory` builds the supervisor on first use (tests pass a fake or a real one)."""
    from helpers.layers.agent.streaming import error_data
    from helpers.layers.agent.supervisor import AgentError

    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    if not key:
        settings = get_settings()
        secret = getattr(settings, "agent_api_key", None)
        key = secret.get_secret_value() if secret else ""
    if not key:
        raise RuntimeError(f"No API key: set {API_KEY_ENV} (the workshop generates it into .env on first run).")
    app = FastAPI(title="llm-eks-workshop supervisor agent", version="1.0")
    state: dict[str, Any] = {"supervisor": None}
    build_lock = threading.Lock()

    def supervisor() -> Any:
        with build_lock:
            if state["supervisor"] is None:
                state["supervisor"] = (supervisor_factory or default_supervisor)()
            return state["supervisor"]

    def require_key(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer key: send the header `Authorization: Bearer <agent API key>`")
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise HTTPException(401, "wrong API key")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={
            "error": "invalid request: " + "; ".join(problems),
            "expected": {"question": f"a non-empty string of at most {MAX_QUESTION_CHARS} characters",
                         "save_as": "optional workspace path such as notes/answer.md",
                         "routing": "optional: code or model", "stream": "optional: true for server-sent events"}})

    @app.exception_handler(AgentError)
    async def failed_dependency(_: Request, exc: AgentError) -> JSONResponse:
        return error_response(error_data(exc))

    @app.exception_handler(ValueError)
    async def bad_question(_: Request, exc: ValueError) -> JSONResponse:  # e.g. "save it to x.md" and nothing else
        return error_response(error_data(exc))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/query", response_model=QueryResponse, dependencies=[Depends(require_key)])
    async def query(body: QueryRequest) -> dict[str, Any]:
        from helpers.layers.agent.supervisor import check_question

        try:
            check_question(body.question)  # whitespace-only questions pass min_length
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        sup = await run_in_threadpool(supervisor)
        if body.stream:
            return await stream(sup, body)
        answer = await run_in_threadpool(sup.ask, body.question, body.save_as, body.routing)
        return answer.public()

    async def stream(sup: Any, body: QueryRequest) -> Any:
        """The answer as server-sent events; a failure before the first event is a plain JSON error."""
        events = await run_in_threadpool(sup.ask_stream, body.question, body.save_as, body.routing)
        first = await run_in_threadpool(next, events, None)
        if first is None or first.name == "error":
            events.close()
            return error_response(first.data if first is not None else {
                "error": "the agent ended without an answer", "dependency": "agent", "status": 500})

        async def send() -> AsyncIterator[str]:
            try:
                yield first.sse()
                while (event := await run_in_threadpool(next, events, None)) is not None:
                    yield event.sse()
            finally:
                events.close()  # the client went away (or the stream ended): stop the agent's work

        return StreamingResponse(send(), media_type="text/event-stream", headers=SSE_HEADERS)

    @app.post("/ingest", dependencies=[Depends(require_key)])
    async def ingest_route() -> dict[str, Any]:
        sup = await run_in_threadpool(supervisor)
        return await run_in_threadpool(ingest or ingest_knowledge, sup)

    return app


def default_supervisor() -> Any:
    """The supervisor for the target this process is told by its environment (WORKSHOP_TARGET; eks in the pod)."""
    from helpers.layers.agent.supervisor import build_supervisor
    from helpers.target import Target

    return build_supervisor(Target.from_environment())


def ingest_knowledge(supervisor: Any) -> dict[str, Any]:
    """Bring the supervisor's vector store in line with knowledge/ (idempotent); the report as a dict."""
    from helpers.layers.rag import knowledge
    from helpers.layers.agent.supervisor import AgentError

    try:
        report = knowledge.ingest(supervisor.store, supervisor.embedder, progress=False)
    except knowledge.IngestError as exc:
        raise AgentError("gateway", str(exc)) from None
    return {"summary": report.summary(), **report.as_row()}


def main(argv: list[str] | None = None) -> int:
    """Serve the agent API with uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m services.agent_api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18089)
    args = parser.parse_args(argv)
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("WORKSHOP_AGENT_TRACING") == "1":
        from helpers.layers.observability import tracing

        tracing.configure("agent-api")
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info", timeout_keep_alive=75)
    return 0


if __name__ == "__main__":
    sys.exit(main())
