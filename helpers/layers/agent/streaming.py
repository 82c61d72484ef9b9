"""The agent's answer as a stream of events (the agent API's `"stream": true`, server-sent events).

    for event in sup.ask_stream("Why is my GPU pod stuck in Pending?"):
        print(event.name, event.data)

Events, in order (code routing; model routing sends the same names):

| event | data | when |
|---|---|---|
| `route` | `{"route", "tentative", "routing"}` | after retrieval: the route the next text is written for |
| | | (`tentative`: the judge has still to confirm it) |
| `sources` | `{"sources": [...]}` | the sources the following text is written from |
| `draft` | `{"text"}` | a piece of the knowledge-base draft, as the model writes it (not yet judged) |
| `relevance` | the judge's verdicts and score | after the judge |
| `route_changed` | `{"from", "to", "reason"}` | the judge rejected the draft: discard it; `sources`, `token`s follow |
| `token` | `{"text"}` | a piece of the answer (web route), as the model writes it |
| `final` | the whole answer, as `POST /query` returns it without streaming | last event of a good answer |
| `error` | `{"error", "dependency", "status"}` | last event of a failed answer (never a silent end) |

On the knowledge-base route the accepted draft is the answer: no `token` events follow, and `final.answer` holds
the draft with its source line. A client shows `draft` text at once, and on `route_changed` replaces it.

The pipeline runs in a worker thread (in the caller's context, so its spans join the caller's trace); the
iterator hands its events over as they come. Closing it early (`close()`: a client that went away) asks the
worker to stop at its next event or token.
"""

from __future__ import annotations

import contextvars
import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

EVENTS = ("route", "sources", "draft", "relevance", "route_changed", "token", "final", "error")
TEXT_EVENTS = ("draft", "token")
Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Event:
    """One event of a streamed answer."""

    name: str
    data: dict[str, Any]

    def sse(self) -> str:
        """The event as server-sent-events text."""
        return f"event: {self.name}\ndata: {json.dumps(self.data, default=str)}\n\n"


class Cancelled(Exception):
    """The consumer of a stream went away: the worker stops."""


def dependency_status(dependency: str) -> int:
    """The HTTP status for a failed dependency: 503 when a backend is unreachable or busy, 502 for a wrong answer."""
    return 503 if dependency in {"vector-store"} else 502


def error_data(exc: BaseException) -> dict[str, Any]:
    """The `error` event's data (and the JSON error body) for an exception."""
    dependency = getattr(exc, "dependency", None)
    if dependency:
        message = getattr(exc, "message", str(exc))
        return {"error": f"{dependency} failed: {message}", "dependency": dependency,
                "status": dependency_status(dependency)}
    if isinstance(exc, ValueError):
        return {"error": str(exc), "dependency": None, "status": 422}
    return {"error": f"the agent failed: {type(exc).__name__}: {str(exc)[:300]}", "dependency": "agent", "status": 500}


class EventStream:
    """The events `work(emit, cancel)` emits from a worker thread, as an iterator; an exception becomes an `error`
    event. `close()` (or leaving a `with` block) asks the worker to stop at its next event or token."""

    def __init__(self, work: Callable[[Emit, threading.Event], Any]) -> None:
        self._events: queue.Queue[Event | None] = queue.Queue()
        self.cancel = threading.Event()
        self._done = False
        context = contextvars.copy_context()  # the worker's spans join the caller's trace
        self._worker = threading.Thread(target=context.run, args=(self._run, work), name="agent-stream", daemon=True)
        self._worker.start()

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        if self.cancel.is_set():
            raise Cancelled()
        self._events.put(Event(name, data))

    def _run(self, work: Callable[[Emit, threading.Event], Any]) -> None:
        try:
            work(self._emit, self.cancel)
        except Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the consumer as an error event
            self._events.put(Event("error", error_data(exc)))
        finally:
            self._events.put(None)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._done:
            raise StopIteration
        event = self._events.get()
        if event is None:
            self._done = True
            raise StopIteration
        return event

    def close(self) -> None:
        """Stop: the worker ends at its next event (a model call at its next token); safe from any thread."""
        self.cancel.set()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stream_events(work: Callable[[Emit, threading.Event], Any]) -> EventStream:
    """Run `work(emit, cancel)` in a worker thread; iterate the result for its events (see EventStream)."""
    return EventStream(work)
