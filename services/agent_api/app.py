"""The agent API (notebook 08): FastAPI around the supervisor, behind a bearer key.

    POST /query   {"question": "..."}  -> {"answer", "route", "sources", "relevance", "timings", "trace_id"}
    POST /ingest  {}                   -> the ingestion report (knowledge/ -> the vector store, idempotent)
    GET  /health                       -> {"status": "ok"} (no key needed: probes call it)

Errors are never HTTP 200: bad input gets 4xx with a message (401 no/wrong key, 422 empty/too long/wrong type),
a failing dependency gets 502/503 naming it ({"error": ..., "dependency": "gateway"}). The supervisor is
synchronous (model calls take seconds), so every call runs in a thread pool: the event loop keeps serving
/health and other requests meanwhile.

    python -m services.agent_api --host 127.0.0.1 --port 18089     # what helpers.local.stack's `agent-api` runs
"""

from __future__ import annotations

import argparse
import hmac
import os
import sys
import threading
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
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


class QueryResponse(BaseModel):
    """The body POST /query returns."""

    answer: str
    route: str
    sources: list[dict[str, Any]]
    relevance: dict[str, Any]
    timings: dict[str, float]
    trace_id: str | None
    saved: dict[str, Any] | None = None


def _dependency_status(dependency: str) -> int:
    """503 when a backend is unreachable or busy, 502 when it answered wrongly (both name the dependency)."""
    return 503 if dependency in {"vector-store"} else 502


def create_app(supervisor_factory: Callable[[], Any] | None = None, api_key: str | None = None,
               ingest: Callable[[Any], dict[str, Any]] | None = None) -> FastAPI:
    """The FastAPI app; `supervisor_factory` builds the supervisor on first use (tests pass a fake or a real one)."""
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
                         "save_as": "optional workspace path such as notes/answer.md"}})

    @app.exception_handler(AgentError)
    async def failed_dependency(_: Request, exc: AgentError) -> JSONResponse:
        return JSONResponse(status_code=_dependency_status(exc.dependency),
                            content={"error": f"{exc.dependency} failed: {exc.message}", "dependency": exc.dependency})

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
        answer = await run_in_threadpool(sup.ask, body.question, body.save_as)
        out = answer.as_dict()
        out.pop("question", None)
        out.pop("contexts", None)
        return out

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
