"""The agent's chat model through Strands: one OpenAI client whose requests carry the W3C traceparent, streamed
answers, and where each call's seconds went (first token = queue + prompt prefill, then decode).

    model = chat_model(t.gateway, max_tokens=128)           # a Strands OpenAIModel on one AsyncOpenAI client
    text, call = write(model, SYSTEM_PROMPT, prompt, on_text=print, step="draft")
    call.first_token_s, call.decode_s, call.completion_tokens

Strands' OpenAIModel builds a new AsyncOpenAI client for every call unless it is given one (`client=`); an
`http_client` inside `client_args` would be closed after the first call. So one client is built per supervisor
and passed with `client=`; its httpx client (helpers.layers.observability.tracing.async_http_client) adds the
current span's traceparent to every request and keeps no idle connection, because Strands runs each synchronous
call in a fresh event loop.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from helpers.layers.agent.judge import ModelCall
from helpers.target import Endpoint

MODEL_TIMEOUT = 600.0  # seconds per model call: a busy 2-core machine is slow, and the local server queues
CUT_SHORT = " … (cut short at the answer's token limit)"


def async_client(endpoint: Endpoint, timeout: float = MODEL_TIMEOUT, cache_hits: Any = None) -> Any:
    """An AsyncOpenAI client on the endpoint whose requests carry the current span's traceparent.

    With `cache_hits` (steps.CacheHits), every answer the gateway served from its response cache is counted."""
    import openai

    from helpers.layers.observability import tracing

    http = tracing.async_http_client(timeout=timeout)
    if cache_hits is not None:
        cache_hits.watch(http)
    return openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.key() or "none", max_retries=1,
                              timeout=timeout, http_client=http)


def chat_model(endpoint: Endpoint, max_tokens: int, client: Any = None, stream: bool = True) -> Any:
    """A Strands OpenAIModel on the endpoint (temperature 0), reusing `client` (one is built when not given)."""
    from strands.models.openai import OpenAIModel

    return OpenAIModel(client=client or async_client(endpoint), model_id=endpoint.model, stream=stream,
                       params={"temperature": 0, "max_tokens": max_tokens})


def strip_think(text: str) -> str:
    """Remove <think>...</think> blocks (Qwen3 in thinking mode) from an answer."""
    return re.sub(r"<think>.*?</think>", "", text, flags=re.S).strip()


def visible_text(text: str) -> str:
    """The part of a growing answer a reader may see now: closed <think> blocks removed, an open one (or a tag
    still being written) held back."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S)
    if "<think>" in text:
        text = text[: text.index("<think>")]
    for n in range(len("<think>") - 1, 0, -1):  # "<thi" may be the start of a tag: wait for the next token
        if text.endswith("<think>"[:n]):
            return text[:-n]
    return text


class TextStream:
    """Collects a model call's streamed text: times the first token, counts chunks, passes visible deltas on."""

    def __init__(self, on_text: Callable[[str], None] | None, step: str) -> None:
        self.on_text = on_text
        self.call = ModelCall(step)
        self.started = time.perf_counter()
        self.first: float | None = None
        self.text = ""
        self.sent = 0
        self.chunks = 0

    def __call__(self, **event: Any) -> None:
        """A Strands callback handler: text deltas arrive as `data`."""
        delta = event.get("data")
        if not isinstance(delta, str) or not delta:
            return
        self.chunks += 1
        self.text += delta
        shown = visible_text(self.text).lstrip()
        if len(shown) > self.sent:
            if self.first is None:
                self.first = time.perf_counter()
            if self.on_text is not None:
                self.on_text(shown[self.sent:])
            self.sent = len(shown)

    def finish(self, usage: dict[str, Any] | None) -> ModelCall:
        """The call's record: usage from the server when it sent one, else the chunks counted."""
        end = time.perf_counter()
        call = self.call
        call.seconds = end - self.started
        if self.first is not None:
            call.first_token_s, call.decode_s = self.first - self.started, end - self.first
        if usage and usage.get("outputTokens"):
            call.prompt_tokens, call.completion_tokens = usage.get("inputTokens"), usage.get("outputTokens")
        else:  # llama-cpp-python sends no usage in a stream; it sends one token per chunk
            call.completion_tokens, call.tokens_from = self.chunks, "chunks"
        return call


def write(model: Any, system_prompt: str, prompt: str, on_text: Callable[[str], None] | None = None,
          step: str = "answer", cancel: threading.Event | None = None, name: str = "supervisor-writer",
          ) -> tuple[str, ModelCall]:
    """One streamed answer from a Strands Agent with no tools: (text without <think>, the measured call).

    An answer cut at the token cap is kept and marked; an empty stream (a model server that failed after sending
    its headers) raises, so it is never passed off as an answer."""
    from strands import Agent
    from strands.types.exceptions import MaxTokensReachedException

    stream = TextStream(on_text, step)
    writer = Agent(model=model, system_prompt=system_prompt, tools=[], callback_handler=stream, name=name)
    try:
        result = writer(prompt, cancel_signal=cancel)
    except MaxTokensReachedException:  # the model answered, at length: keep what it wrote, say it was cut
        stream.finish(None)
        return strip_think(stream.text).rstrip() + CUT_SHORT, stream.call
    usage = dict(result.metrics.accumulated_usage) if result.metrics else None
    call = stream.finish(usage)
    text = strip_think(str(result))
    if not text and not (cancel is not None and cancel.is_set()):
        raise RuntimeError("the model returned an empty answer (an empty stream: read the model server's log)")
    return text, call
