"""The agent's streamed answer and its measured model calls, without a model: the real pipeline (code routing) with
scripted parts, the event stream (order, errors, cancel), Strands' writer on one traced OpenAI client against a
loopback stub, and the <think> filter."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from helpers.layers.agent import chat, streaming
from helpers.layers.agent.judge import Judge, ModelCall, Verdict
from helpers.layers.agent.steps import AskRun
from helpers.layers.agent.supervisor import build_supervisor
from helpers.layers.rag.stores.base import Hit
from helpers.target import Endpoint, Target


def hit(source: str, score: float, text: str = "Pods stay Pending when no node fits their requests.") -> Hit:
    return Hit(id=source, score=score, raw_score=score, source=source, title=source.split("/")[-1], category="c",
               tags=(), position=0, text=text)


class ScriptedJudge:
    """Gives the same verdict for every chunk, as a measured call."""

    def __init__(self, verdict: int | None) -> None:
        self.value = verdict
        self.asked: list[tuple[str, str, str]] = []

    def verdict(self, question: str, context: str, answer: str) -> Verdict:
        self.asked.append((question, context, answer))
        return Verdict(self.value, "scripted", None if self.value is not None else "no JSON",
                       ModelCall("judge", 0.01, 1000, 7))


def scripted_supervisor(settings: Any, verdict: int | None = 1, web_error: Exception | None = None,
                        retrieve_error: Exception | None = None, hits: list[Hit] | None = None) -> Any:
    """A real Supervisor (code routing) whose retrieval, writer, judge and web search are scripted."""
    dead = Endpoint("http://127.0.0.1:9/v1", SecretStr("sk-test"), "reasoning", "nothing (test)")
    sup = build_supervisor(Target("local", settings), gateway=dead, routing="code")
    found = hits if hits is not None else [hit("troubleshooting/pending-pods.md", 0.62), hit("concepts/x.md", 0.45)]

    def retrieve(question: str, k: int | None = None) -> list[Hit]:
        if retrieve_error:
            raise retrieve_error
        return found

    def write(question: str, texts: list[str], titles: list[str], run: AskRun | None = None, event: str = "token",
              step: str = "answer", cancel: threading.Event | None = None) -> str:
        pieces = ["A web answer ", "[1]."] if step == "answer" else ["No node fits ", "its requests [1]."]
        for piece in pieces:
            if run is not None:
                run.text(event)(piece)
        if run is not None:
            run.calls.append(ModelCall(step, 0.02, 300, 2, 0.01, 0.01, "chunks"))
        return "".join(pieces)

    def web_search(question: str) -> list[dict[str, Any]]:
        if web_error:
            raise web_error
        return [{"url": "https://example.org/a", "title": "A", "content": "the race was won by A.", "score": 0.9}]

    sup.retrieve, sup.write, sup.web_search = retrieve, write, web_search
    sup._judge = ScriptedJudge(verdict)
    return sup


def names(events: list[streaming.Event]) -> list[str]:
    return [e.name for e in events]


def test_the_pipeline_streams_a_knowledge_base_answer_in_order(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=1)
    events = list(sup.ask_stream("Why is my GPU pod stuck in Pending?"))
    assert names(events) == ["route", "sources", "draft", "draft", "relevance", "final"]
    final = events[-1].data
    assert final["answer"].startswith("No node fits its requests [1].") and "Sources: [1]" in final["answer"]
    assert final["relevance"]["score"] == 1.0 and final["route"] == "knowledge_base"
    assert set(final["timings"]) == {"retrieve", "draft", "judge", "total"}
    # the judge read the chunk exactly as the writer did, and judged the draft (not the question)
    (question, context, answer), = sup._judge.asked
    assert context == " ".join(hit("x", 0).text.split()) and answer == "No node fits its requests [1]."


def test_ask_returns_what_the_stream_ends_with(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=0)
    answer = sup.ask("Why is my GPU pod stuck in Pending?")
    final = list(sup.ask_stream("Why is my GPU pod stuck in Pending?"))[-1].data
    assert answer.route == final["route"] == "web_search"
    assert answer.answer == final["answer"] and answer.sources == final["sources"]
    assert [s["step"] for s in answer.steps] == ["draft", "judge", "judge", "answer"]  # 0 for chunk 1: ask about 2
    assert answer.first_token_s is not None and answer.first_token_s <= answer.timings["total"]
    assert set(answer.timings) == {"retrieve", "draft", "judge", "web_search", "answer", "total"}


def test_chunks_below_the_floor_are_neither_drafted_from_nor_judged(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, hits=[hit("a.md", 0.2), hit("b.md", 0.1)])
    events = list(sup.ask_stream("Who won the Riverside City Marathon?"))
    assert names(events)[:2] == ["route", "relevance"] and events[0].data["route"] == "web_search"
    assert not events[0].data["tentative"] and "route_changed" not in names(events)
    assert sup._judge.asked == [] and events[-1].data["relevance"]["method"] == "floor"


def test_only_chunks_above_the_floor_are_the_drafts_sources(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=1, hits=[hit("a.md", 0.6), hit("b.md", 0.1)])
    answer = sup.ask("What is a?")
    assert [s["source"] for s in answer.sources] == ["a.md"] and len(answer.contexts) == 1


def test_a_failing_judge_falls_back_to_similarity_and_is_counted(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=None)
    answer = sup.ask("Why is my GPU pod stuck in Pending?")
    assert answer.relevance["judge_failures"] == 1 and answer.relevance["method"] == "embedding"  # all it asked failed
    assert answer.route == "knowledge_base"  # similarity 0.62 >= similarity_useful for the first chunk


def test_an_exception_becomes_the_last_event() -> None:
    def work(emit: streaming.Emit, cancel: threading.Event) -> None:
        emit("route", {"route": "knowledge_base"})
        raise RuntimeError("boom")

    events = list(streaming.stream_events(work))
    assert names(events) == ["route", "error"]
    assert events[-1].data == {"error": "the agent failed: RuntimeError: boom", "dependency": "agent", "status": 500}


def test_closing_a_stream_stops_its_worker() -> None:
    steps: list[int] = []

    def work(emit: streaming.Emit, cancel: threading.Event) -> None:
        for i in range(1000):
            emit("token", {"text": str(i)})
            steps.append(i)
            time.sleep(0.005)

    events = streaming.stream_events(work)
    assert next(events).name == "token"
    events.close()
    rest = list(events)  # what was queued still comes out; then the stream ends: the worker stopped at its next emit
    assert len(rest) < 50 and len(steps) < 50


def test_sse_text() -> None:
    assert streaming.Event("token", {"text": "a\nb"}).sse() == 'event: token\ndata: {"text": "a\\nb"}\n\n'


@pytest.mark.parametrize("text, shown", [
    ("Hello", "Hello"),
    ("<think>plan</think>Answer", "Answer"),
    ("<think>still thinking", ""),
    ("Answer <thi", "Answer "),
    ("x</think>", "x</think>"),
])
def test_thinking_is_not_streamed(text: str, shown: str) -> None:
    assert chat.visible_text(text) == shown


def test_a_text_stream_times_the_first_visible_token_and_counts_chunks() -> None:
    seen: list[str] = []
    stream = chat.TextStream(seen.append, "draft")
    for piece in ["<think>", "hmm", "</think>", " Pods", " wait."]:
        stream(data=piece)
    call = stream.finish(None)
    assert "".join(seen) == "Pods wait." and call.completion_tokens == 5 and call.tokens_from == "chunks"
    assert call.first_token_s is not None and call.decode_s is not None
    assert stream.finish({"inputTokens": 40, "outputTokens": 3}).completion_tokens == 3


# ---------------------------------------------------------------- the model calls, against a loopback stub


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    """One streamed chat-completion chunk as an SSE data line."""
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


class StubOpenAI:
    """A loopback OpenAI-compatible chat route: records each request's headers and body; answers `reply`, or the
    next entry of `script` ({"text": ...} or {"tool": name, "args": {...}}) when one is given."""

    def __init__(self, reply: str, script: list[dict[str, Any]] | None = None) -> None:
        stub = self
        self.reply = reply
        self.script = list(script or [])
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stub.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                step = stub.script.pop(0) if stub.script else {"text": stub.reply}
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    if "tool" in step:
                        call = {"index": 0, "id": f"call_{len(stub.requests)}", "type": "function",
                                "function": {"name": step["tool"], "arguments": json.dumps(step["args"])}}
                        self.wfile.write(chunk({"role": "assistant", "tool_calls": [call]}).encode())
                        self.wfile.write(chunk({}, "tool_calls").encode())
                    else:
                        text = step["text"]
                        for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                            self.wfile.write(chunk({"content": piece}).encode())
                        self.wfile.write(chunk({}, "stop").encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                payload = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": step["text"]}}],
                                      "usage": {"prompt_tokens": 1100, "completion_tokens": 7,
                                                "total_tokens": 1107}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = Endpoint(f"http://127.0.0.1:{self.server.server_port}/v1", SecretStr("sk-stub"), "reasoning",
                                 "stub")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[StubOpenAI]:
    server = StubOpenAI('{"verdict": 1}')
    yield server
    server.close()


@pytest.fixture
def current_span() -> Iterator[str]:
    """A sampled span made current (an SDK tracer, not the global one); yields its trace id."""
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("test").start_as_current_span("caller") as span:
        yield format(span.get_span_context().trace_id, "032x")


def test_the_writer_streams_on_one_client_and_every_call_carries_traceparent(stub, current_span) -> None:
    stub.reply = "Pods wait for a node [1]."
    client = chat.async_client(stub.endpoint)
    model = chat.chat_model(stub.endpoint, max_tokens=64, client=client)
    seen: list[str] = []
    for _ in range(2):  # Strands runs each call in a fresh event loop: the one client must serve both
        text, call = chat.write(model, "system", "question", on_text=seen.append, step="draft")
        assert text == "Pods wait for a node [1]." and call.step == "draft" and call.first_token_s is not None
    assert "".join(seen) == text * 2
    assert len(stub.requests) == 2
    for headers, body in stub.requests:
        assert body["stream"] is True and body["max_tokens"] == 64 and body["temperature"] == 0
        assert headers["traceparent"].split("-")[1] == current_span


def test_the_judge_asks_for_a_verdict_only_through_a_json_schema(stub, current_span) -> None:
    judge = Judge(stub.endpoint)
    v = judge.verdict("Why Pending?", "No node fits.", "No node fits [1].")
    assert v.verdict == 1 and v.error is None
    assert (v.call.prompt_tokens, v.call.completion_tokens) == (1100, 7)
    headers, body = stub.requests[0]
    assert headers["traceparent"].split("-")[1] == current_span
    assert body["temperature"] == 0 and body["max_tokens"] <= 32 and "stream" not in body
    assert body["response_format"] == {"type": "json_object", "schema": {
        "type": "object", "properties": {"verdict": {"type": "integer", "enum": [0, 1]}}, "required": ["verdict"]}}
    (message,) = body["messages"]
    assert message["role"] == "user" and message["content"].endswith('"answer": "No node fits [1]."\n}\nOutput: ')


@pytest.mark.parametrize("reply, error", [("not json", "not JSON"), ('{"verdict": 2}', "no verdict"),
                                          ('{"verdict": 1', "not JSON")])
def test_a_verdict_that_cannot_be_read_is_a_counted_failure(stub, reply: str, error: str) -> None:
    stub.reply = reply
    v = Judge(stub.endpoint).verdict("q", "c", "a")
    assert v.verdict is None and error in v.error


def test_an_unreachable_judge_is_a_failure_not_an_exception() -> None:
    dead = Endpoint("http://127.0.0.1:9/v1", SecretStr("sk"), "reasoning", "nothing")
    v = Judge(dead, timeout=2).verdict("q", "c", "a")
    assert v.verdict is None and "Connection" in v.error


# ---------------------------------------------------------------- model routing, with a scripted model


MODEL_SCRIPT = [  # what "the model" answers, request by request (supervisor, then the specialist it called, ...)
    {"tool": "knowledge_base", "args": {"input": "Why is my GPU pod stuck in Pending?"}},  # supervisor: required
    {"tool": "search_knowledge_base", "args": {"query": "GPU pod Pending"}},  # knowledge agent: required
    {"text": "No node fits its requests [1]."},  # knowledge agent: answers, no tools offered
    {"tool": "relevance_judge", "args": {"input": "Why is my GPU pod stuck in Pending?"}},  # supervisor: auto
    {"tool": "context_precision", "args": {"question": "Why is my GPU pod stuck in Pending?"}},  # judge agent
    {"text": "Not relevant."},  # judge agent
    {"tool": "web_search", "args": {"input": "Why is my GPU pod stuck in Pending?"}},  # supervisor
    {"tool": "search_web", "args": {"query": "GPU pod Pending"}},  # web agent
    {"text": "A web answer [1]."},  # web agent
    {"text": "The web search answered."},  # supervisor: done
]


def model_routed(settings: Any, server: StubOpenAI, **kwargs: Any) -> Any:
    """A scripted supervisor (retrieval, judge, web search) whose chat model is the stub, routing by the model."""
    sup = scripted_supervisor(settings, **kwargs)
    sup.gateway = server.endpoint
    sup.config.routing = sup.routing = "model"
    return sup


def test_model_routing_streams_what_the_model_did(isolated_settings) -> None:
    server = StubOpenAI("", MODEL_SCRIPT)
    try:
        sup = model_routed(isolated_settings, server, verdict=0)
        events = list(sup.ask_stream("Why is my GPU pod stuck in Pending?"))
    finally:
        server.close()
    assert names(events) == ["route", "sources", "draft", "draft", "relevance", "route_changed", "sources", "token",
                             "token", "final"]
    assert events[0].data == {"route": "knowledge_base", "tentative": True, "routing": "model"}
    final = events[-1].data
    assert final["route"] == "web_search" and final["routing"] == "model"
    assert final["tools"] == ["knowledge_base", "relevance_judge", "web_search"]
    assert final["answer"].startswith("A web answer [1].") and final["sources"][0]["source"] == "https://example.org/a"
    assert final["relevance"]["score"] == 0.0 and [s["step"] for s in final["steps"]][-1] == "supervisor"
    bodies = [body for _, body in server.requests]
    assert bodies[0]["tool_choice"] == "required"  # the supervisor's first step must go to a specialist...
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == ["knowledge_base", "web_search"]  # ...that answers
    assert bodies[1]["tool_choice"] == "required" and "tools" not in bodies[2]  # a specialist: its tool, then answer
    assert bodies[3]["tool_choice"] == "auto" and len(bodies[3]["tools"]) == 4  # then the supervisor chooses


def test_a_dependency_failing_under_the_model_fails_the_answer(isolated_settings) -> None:
    from helpers.layers.agent.answers import AgentError

    server = StubOpenAI("", MODEL_SCRIPT)
    try:
        sup = model_routed(isolated_settings, server, retrieve_error=AgentError("vector-store", "no collection"))
        with pytest.raises(AgentError) as info:
            sup.ask("Why is my GPU pod stuck in Pending?")
    finally:
        server.close()
    assert info.value.dependency == "vector-store"
    assert len(server.requests) <= 3  # stopped at once: no further model calls after the failure
