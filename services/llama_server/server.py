"""Start llama-cpp-python's own OpenAI-compatible server, with two fixes for the local stand-in for vLLM.

    python -m services.llama_server.server --config_file .workshop/config/model-server.json

1. Tool calls: registers services.llama_server.tool_calls' chat handler ("hermes-tools"), so a request with
   `tool_choice: "auto"` gets a structured `tool_calls` entry, as vLLM's `--tool-call-parser hermes` gives.
2. Unknown model names: llama-cpp-python silently answers with its default model whatever `model` says;
   vLLM answers 404. This server answers an authenticated request for a name it does not serve with an
   OpenAI-style 404 (`model_not_found`), so a typo in a client fails here exactly as it would on EKS.
3. Tool-call history: OpenAI clients send the assistant turn that made a tool call with `"content": null`,
   which llama-cpp-python's request schema rejects (with a 500). The key is dropped before the app sees it
   (an absent content means the same), so the tool result can go back to the model.

   The same guard maps `max_completion_tokens` (OpenAI's newer name, which langchain-openai and so ragas send)
   to `max_tokens`: llama-cpp-python 0.3.36 knows only `max_tokens` and silently drops the other, so a capped
   judge wrote 600 tokens. A request that sends both keeps its `max_tokens` (vLLM reads either).

4. Tracing: a request that carries a W3C `traceparent` gets a SERVER span (helpers.layers.observability.tracing.TracingMiddleware,
   exported where OTEL_EXPORTER_OTLP_TRACES_ENDPOINT points), so the model server joins the caller's trace.

5. Prompt cache: with `cache: true` (helpers.layers.models.servers sets it for the chat model), llama-cpp-python keeps
   the model state after each prompt, so a later prompt that starts the same way (the RAGAs judge's long
   instructions and examples, the agent's system prompt) skips re-reading that prefix. Stock `save_state`
   also copies the whole logits buffer with every entry (n_batch x vocabulary floats, about 300 MB for
   Qwen2.5, 0.7 s on 2 cores), which the cache's size cap does not count, and `load_state` refills it (another
   0.7 s). Without `logits_all` nothing reads that buffer (llama.cpp samples on its own), so `slim_state` and
   `slim_load` skip it: an entry is the model state proper (about 7 MB for a 600-token prompt).

   Stock `LlamaRAMCache` also keeps one entry per request, so every judge call adds another copy of the same
   ~900-token instructions (14 MB each) and evicts, least recently used first, the one prompt that had no twin yet:
   with the four RAGAs prompts of notebook 09 in turn, the relevance prompt never hit (2.9 s of prefill each time,
   0.5 s with a hit). `PromptFamilyCache` keeps one entry per prompt family instead: a new entry replaces any
   entry it shares at least FAMILY_PREFIX_TOKENS leading tokens with (the newer one serves every lookup the older
   one served up to that shared prefix).

6. Grammar decoding: at temperature 0 with a grammar (the judge's JSON schemas), services.llama_server.sampling
   picks the token from a shortlist of the highest logits first, provably the same token as the full-vocabulary
   pass, which then runs only when the shortlist cannot decide.

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


def map_max_completion_tokens(body: dict[str, Any]) -> bool:
    """Move `max_completion_tokens` to `max_tokens` (in place) unless `max_tokens` is set; True when changed."""
    if "max_completion_tokens" not in body:
        return False
    limit = body.pop("max_completion_tokens")
    if body.get("max_tokens") is None and limit is not None:
        body["max_tokens"] = limit
    return True


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
    """ASGI middleware on the model routes: 404 for an unknown model name, null assistant content accepted,
    `max_completion_tokens` read as `max_tokens`."""

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
        if isinstance(parsed, dict) and any([drop_null_content(parsed), map_max_completion_tokens(parsed)]):
            body = json.dumps(parsed).encode()
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


FAMILY_PREFIX_TOKENS = 256  # two prompts sharing this many leading tokens are one family (one cache entry)


def prompt_family_cache_class() -> type:
    """llama_cpp's LlamaRAMCache keeping one entry per prompt family (see point 5 above)."""
    from llama_cpp.llama import Llama
    from llama_cpp.llama_cache import LlamaRAMCache

    class PromptFamilyCache(LlamaRAMCache):  # type: ignore[misc]
        """A RAM prompt cache in which a new entry replaces the entries of its family."""

        def __setitem__(self, key: Any, value: Any) -> None:
            key = tuple(key)
            for old in [k for k in self.cache_state if k != key and
                        Llama.longest_token_prefix(k, key) >= min(FAMILY_PREFIX_TOKENS, len(k))]:
                del self.cache_state[old]
            super().__setitem__(key, value)

    return PromptFamilyCache


def use_prompt_family_cache() -> None:
    """Make llama_cpp.server build its RAM prompt caches as PromptFamilyCache (it looks up llama_cpp.LlamaRAMCache)."""
    import llama_cpp

    if getattr(llama_cpp.LlamaRAMCache, "__name__", "") != "PromptFamilyCache":
        llama_cpp.LlamaRAMCache = prompt_family_cache_class()


_stock_save_state: Any = None  # llama_cpp's own save_state and load_state, kept by use_slim_cache_states()
_stock_load_state: Any = None


def slim_state(llama: Any) -> Any:
    """llama.save_state() without the logits buffer (unused unless logits_all), so the cache stores megabytes."""
    import ctypes

    import llama_cpp
    from llama_cpp.llama import Llama, LlamaState

    if getattr(llama, "_logits_all", False):  # every row is real (logprobs): keep them all
        return (_stock_save_state or Llama.save_state)(llama)
    size = llama_cpp.llama_state_get_size(llama._ctx.ctx)
    buffer = (ctypes.c_uint8 * int(size))()
    n_bytes = int(llama_cpp.llama_state_get_data(llama._ctx.ctx, buffer, size))
    if n_bytes > int(size):
        raise RuntimeError("Failed to copy llama state data")
    return LlamaState(input_ids=llama.input_ids.copy(), scores=llama.scores[:1, :].copy(), n_tokens=llama.n_tokens,
                      llama_state=ctypes.string_at(buffer, n_bytes), llama_state_size=n_bytes, seed=llama._seed)


def slim_load(llama: Any, state: Any) -> None:
    """llama.load_state() for a slim state: the model state and tokens, without refilling the logits buffer."""
    import ctypes

    import llama_cpp
    from llama_cpp.llama import Llama

    if getattr(llama, "_logits_all", False) or state.scores.shape[0] != 1:
        return (_stock_load_state or Llama.load_state)(llama, state)
    llama.input_ids = state.input_ids.copy()
    llama.n_tokens = state.n_tokens
    llama._requires_eval = True
    llama._seed = state.seed
    buffer = (ctypes.c_uint8 * state.llama_state_size).from_buffer_copy(state.llama_state)
    if llama_cpp.llama_state_set_data(llama._ctx.ctx, buffer, state.llama_state_size) != state.llama_state_size:
        raise RuntimeError("Failed to set llama state data")
    return None


def use_slim_cache_states() -> None:
    """Make every Llama in this process save and load slim states for its prompt cache (see point 5 above)."""
    global _stock_save_state, _stock_load_state
    from llama_cpp.llama import Llama

    if Llama.save_state is not slim_state:
        _stock_save_state, _stock_load_state = Llama.save_state, Llama.load_state
    Llama.save_state = slim_state  # type: ignore[method-assign]
    Llama.load_state = slim_load  # type: ignore[method-assign]


def load_config(path: str) -> tuple[Any, list[Any]]:
    """Server and model settings from a llama_cpp.server config file (JSON or YAML)."""
    from llama_cpp.server.settings import ConfigFileSettings, ServerSettings

    if not os.path.exists(path):
        raise SystemExit(f"config file {path} not found: start the server with `python -m helpers.local.stack up`.")
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

    from services.llama_server.sampling import use_greedy_grammar_shortlist
    from services.llama_server.tool_calls import register

    register()
    use_greedy_grammar_shortlist()
    server_settings, model_settings = load_config(config_file)
    if any(m.cache for m in model_settings):
        use_slim_cache_states()
        use_prompt_family_cache()
    app = llama_create_app(server_settings=server_settings, model_settings=model_settings)
    known = [m.model_alias or m.model for m in model_settings]
    app.add_middleware(OpenAIRequestGuard, known=known, api_key=server_settings.api_key)
    from services.otel import TracingMiddleware

    app.add_middleware(TracingMiddleware, service_name="model-server", routes=MODEL_ROUTES)  # outermost: sees it all
    app.state.server_settings = server_settings
    return app


def main(argv: list[str] | None = None) -> int:
    """Command line: --config_file F, as `python -m llama_cpp.server` takes it."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m services.llama_server.server", description=__doc__.split("\n")[0])
    parser.add_argument("--config_file", required=True, help="llama_cpp.server config (JSON or YAML)")
    args = parser.parse_args(argv)
    app = create_app(args.config_file)
    settings = app.state.server_settings
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
