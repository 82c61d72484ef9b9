"""Start llama-cpp-python's own OpenAI-compatible server, with two fixes for the local stand-in for vLLM.

    python -m helpers.llama_server --config_file .workshop/config/model-server.json

1. Tool calls: registers helpers.tool_calls' chat handler ("hermes-tools"), so a request with
   `tool_choice: "auto"` gets a structured `tool_calls` entry, as vLLM's `--tool-call-parser hermes` gives.
2. Unknown model names: llama-cpp-python silently answers with its default model whatever `model` says;
   vLLM answers 404. This server answers an authenticated request for a name it does not serve with an
   OpenAI-style 404 (`model_not_found`), so a typo in a client fails here exactly as it would on EKS.
3. Tool-call history: OpenAI clients send the assistant turn that made a tool call with `"content": null`,
   which llama-cpp-python's request schema rejects (with a 500). The key is dropped before the app sees it
   (an absent content means the same), so the tool result can go back to the model.

4. Tracing: a request that carries a W3C `traceparent` gets a SERVER span (helpers.tracing.TracingMiddleware,
   exported where OTEL_EXPORTER_OTLP_TRACES_ENDPOINT points), so the model server joins the caller's trace.

Everything else (routes, API key auth, streaming, /v1/models) is llama_cpp.server.app unchanged.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

MODEL_ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/engines/copilot-codex/completions"}
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def model_not_found(model: str, known: Iterable[str]) -> dict[str, Any]:
    """The OpenAI-style error body for a model name this server does not serve."""
    return {
        "error": {
            "message": f"The model `{model}` does not exist. This server serves: {', '.join(sorted(known))}.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def drop_null_content(body: dict[str, Any]) -> bool:
    """Remove `"content": null` from assistant messages (in place); True when something changed."""
    changed = False
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "assistant" and "content" in message:
            if message["content"] is None:
                del message["content"]
                changed = True
    return changed


class OpenAIRequestGuard:
    """ASGI middleware on the model routes: 404 for an unknown model name, null assistant content accepted."""

    def __init__(self, app: Any, known: Iterable[str], api_key: str | None) -> None:
        self.app = app
        self.known = frozenset(known)
        self.api_key = api_key

    def _authorised(self, scope: Scope) -> bool:
        if not self.api_key:
            return True
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        return hmac.compare_digest(header, f"Bearer {self.api_key}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Look at the request body's `model` on the model routes; pass everything else through untouched."""
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in MODEL_ROUTES:
            return await self.app(scope, receive, send)
        if not self._authorised(scope):  # the app answers 401; never reveal model names to strangers
            return await self.app(scope, receive, send)
        messages, body, more = [], b"", True
        while more:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            more = message.get("more_body", False) and message["type"] == "http.request"
        try:
            parsed = json.loads(body or b"{}")
            model = parsed.get("model")
        except (json.JSONDecodeError, AttributeError):
            parsed, model = None, None  # malformed: the app answers it itself
        if isinstance(model, str) and model not in self.known:
            payload = json.dumps(model_not_found(model, self.known)).encode()
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": payload})
            return None
        if isinstance(parsed, dict) and drop_null_content(parsed):
            body = json.dumps(parsed).encode()
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


def load_config(path: str) -> tuple[Any, list[Any]]:
    """Server and model settings from a llama_cpp.server config file (JSON or YAML)."""
    from llama_cpp.server.settings import ConfigFileSettings, ServerSettings

    if not os.path.exists(path):
        raise SystemExit(f"config file {path} not found: start the server with `python -m helpers.stack up`.")
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        raw = json.dumps(yaml.safe_load(raw)).encode()
    config = ConfigFileSettings.model_validate_json(raw)
    return ServerSettings.model_validate(config), list(config.models)


def create_app(config_file: str) -> Any:
    """llama_cpp.server's FastAPI app for this config, with the tool-call handler and the 404 check."""
    from llama_cpp.server.app import create_app as llama_create_app

    from helpers.tool_calls import register

    register()
    server_settings, model_settings = load_config(config_file)
    app = llama_create_app(server_settings=server_settings, model_settings=model_settings)
    known = [m.model_alias or m.model for m in model_settings]
    app.add_middleware(OpenAIRequestGuard, known=known, api_key=server_settings.api_key)
    from helpers.tracing import TracingMiddleware

    app.add_middleware(TracingMiddleware, service_name="model-server", routes=MODEL_ROUTES)  # outermost: sees it all
    app.state.server_settings = server_settings
    return app


def main(argv: list[str] | None = None) -> int:
    """Command line: --config_file F, as `python -m llama_cpp.server` takes it."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m helpers.llama_server", description=__doc__.split("\n")[0])
    parser.add_argument("--config_file", required=True, help="llama_cpp.server config (JSON or YAML)")
    args = parser.parse_args(argv)
    app = create_app(args.config_file)
    settings = app.state.server_settings
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
