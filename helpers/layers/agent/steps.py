"""One question's bookkeeping: each step timed (and traced as a span), each model call measured, the time to the
first answer token, and the events a streamed answer sends (helpers.layers.agent.streaming)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from helpers.layers.agent.judge import ModelCall
from helpers.layers.agent.streaming import Cancelled, Emit


def tracer() -> Any:
    """The workshop's tracer (the global provider tracing.configure() installed, else a no-op)."""
    from opentelemetry import trace

    return trace.get_tracer("llm-eks-workshop")


def trace_id(span: Any) -> str | None:
    """The span's trace id as 32 hex digits, or None when nothing is traced."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class CacheHits:
    """Counts the model calls the gateway answered from its response cache (such an answer names its cache key)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def note(self, response: Any) -> None:
        """httpx response hook: count the response if it came from the gateway's cache."""
        from helpers.layers.gateway.timing import CACHE_KEY_HEADER

        if CACHE_KEY_HEADER in response.headers:
            with self._lock:
                self.count += 1

    async def note_async(self, response: Any) -> None:
        """The same hook for httpx.AsyncClient, whose hooks must be coroutines."""
        self.note(response)

    def watch(self, http_client: Any) -> Any:
        """Add the hook to an httpx client (sync or async) and return it."""
        import httpx

        hook = self.note_async if isinstance(http_client, httpx.AsyncClient) else self.note
        hooks = http_client.event_hooks
        http_client.event_hooks = {**hooks, "response": [*hooks.get("response", []), hook]}
        return http_client


class AskRun:
    """Timings per step, model calls, first token and events of one question (one per ask: never shared)."""

    def __init__(self, emit: Emit | None = None) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.calls: list[ModelCall] = []
        self.first_token_s: float | None = None
        self._emit = emit

    def emit(self, name: str, data: dict[str, Any]) -> None:
        """Send an event to the stream's consumer (nothing when the answer is not streamed)."""
        if self._emit is not None:
            self._emit(name, data)

    def text(self, event: str) -> Callable[[str], None]:
        """A callback for a streamed model call: notes the first token, sends each piece as `event`."""

        def on_text(delta: str) -> None:
            if self.first_token_s is None:
                self.first_token_s = round(time.perf_counter() - self.started, 3)
            try:
                self.emit(event, {"text": delta})
            except Cancelled:  # the consumer went away: the model call stops on its cancel signal
                pass

        return on_text

    @contextmanager
    def step(self, name: str) -> Iterator[Any]:
        """Time a step (seconds in `timings[name]`) inside a span `agent.<name>`."""
        started = time.perf_counter()
        try:
            with tracer().start_as_current_span(f"agent.{name}") as span:
                yield span
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 3)

    def finish(self) -> None:
        """Record the total."""
        self.timings["total"] = round(time.perf_counter() - self.started, 3)

    def steps(self) -> list[dict[str, Any]]:
        """The model calls as rows."""
        return [c.as_dict() for c in self.calls]
