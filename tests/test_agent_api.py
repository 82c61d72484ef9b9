"""The agent API: bearer key, 4xx on bad input, 5xx naming a failing dependency, no blocked event loop, and the
streamed answer (server-sent events: order, a route change, an error mid-stream)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from pydantic import SecretStr

from helpers.layers.agent.supervisor import AgentAnswer, AgentError, build_supervisor
from helpers.target import Endpoint, Target
from services.agent_api import app as agent_api
from tests.conftest import free_port
from tests.test_agent_stream import scripted_supervisor

KEY = "sk-agent-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


class SlowSupervisor:
    """Answers after a pause, so a test can check that /health is served meanwhile."""

    def __init__(self, pause: float = 1.0) -> None:
        self.pause = pause
        self.routing: str | None = None

    def ask(self, question: str, save_as: str | None = None, routing: str | None = None) -> AgentAnswer:
        self.routing = routing
        time.sleep(self.pause)
        return AgentAnswer(question=question, answer="ok [1]", route="knowledge_base",
                           sources=[{"id": "x", "title": "t", "source": "s.md", "score": 0.9}], contexts=["c"],
                           relevance={"score": 1.0, "method": "ragas", "judge_failures": 0}, timings={"total": 1.0},
                           trace_id=None)


@pytest.fixture
def client() -> TestClient:
    return TestClient(agent_api.create_app(lambda: SlowSupervisor(0.0), api_key=KEY))


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_query_without_the_right_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    reply = client.post("/query", json={"question": "hello?"}, headers=headers)
    assert reply.status_code == 401
    assert "key" in reply.json()["detail"]


@pytest.mark.parametrize("body, says", [
    ({"question": ""}, "question"),
    ({"question": "   "}, "empty"),
    ({"question": "x" * (agent_api.MAX_QUESTION_CHARS + 1)}, "at most"),
    ({"question": 42}, "string"),
    ({"question": ["a", "b"]}, "string"),
    ({}, "question"),
    ({"question": "ok?", "extra": 1}, "extra"),
    ({"question": "ok?", "routing": "llm"}, "routing"),
    ({"question": "ok?", "stream": "yes"}, "stream"),
])
def test_bad_input_is_422_with_a_message(client: TestClient, body: dict, says: str) -> None:
    reply = client.post("/query", json=body, headers=AUTH)
    assert reply.status_code == 422
    text = str(reply.json()).lower()
    assert says in text


def test_body_that_is_not_json_is_422(client: TestClient) -> None:
    reply = client.post("/query", content=b"not json", headers={**AUTH, "content-type": "application/json"})
    assert reply.status_code == 422


def test_query_returns_the_documented_fields(client: TestClient) -> None:
    reply = client.post("/query", json={"question": "Why is my pod Pending?"}, headers=AUTH)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert {"answer", "route", "sources", "relevance", "timings", "trace_id", "steps", "routing"} <= set(reply.json())
    assert "question" not in reply.json() and "contexts" not in reply.json()


def test_the_routing_mode_reaches_the_supervisor() -> None:
    fake = SlowSupervisor(0.0)
    tc = TestClient(agent_api.create_app(lambda: fake, api_key=KEY))
    assert tc.post("/query", json={"question": "x?", "routing": "model"}, headers=AUTH).status_code == 200
    assert fake.routing == "model"
    assert tc.post("/query", json={"question": "x?"}, headers=AUTH).status_code == 200
    assert fake.routing is None  # the supervisor's default: model on eks, code locally


# ---------------------------------------------------------------- streaming (server-sent events)


def read_events(reply) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a text/event-stream body."""
    events = []
    for block in reply.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def stream_reply(sup, **body):
    tc = TestClient(agent_api.create_app(lambda: sup, api_key=KEY))
    return tc.post("/query", json={"question": "Why is my GPU pod stuck in Pending?", "stream": True, **body},
                   headers=AUTH)


def test_a_knowledge_base_answer_streams_route_sources_draft_relevance_final(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=1)
    reply = stream_reply(sup)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = read_events(reply)
    names = [name for name, _ in events]
    assert names[:2] == ["route", "sources"] and names[-2:] == ["relevance", "final"]
    assert set(names[2:-2]) == {"draft"}
    assert events[0][1] == {"route": "knowledge_base", "tentative": True, "routing": "code"}
    final = events[-1][1]
    assert final["route"] == "knowledge_base" and final["first_token_s"] is not None
    assert "".join(d["text"] for n, d in events if n == "draft") in final["answer"]
    assert [s["step"] for s in final["steps"]] == ["draft", "judge"]


def test_a_rejected_draft_is_a_route_change_then_the_web_answer_streams(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=0)
    events = read_events(stream_reply(sup))
    names = [name for name, _ in events]
    changed = names.index("route_changed")
    assert names[:2] == ["route", "sources"] and names[changed - 1] == "relevance"
    assert names[changed + 1] == "sources" and set(names[changed + 2:-1]) == {"token"} and names[-1] == "final"
    assert events[changed][1]["from"] == "knowledge_base" and events[changed][1]["to"] == "web_search"
    assert events[changed + 1][1]["sources"][0]["source"].startswith("https://")
    final = events[-1][1]
    assert final["route"] == "web_search" and "web answer" in final["answer"]
    assert "".join(d["text"] for n, d in events if n == "token") in final["answer"]


def test_an_error_mid_stream_is_an_error_event_not_a_quiet_end(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=0, web_error=AgentError("mcp-web-search", "server gone"))
    reply = stream_reply(sup)
    events = read_events(reply)
    assert reply.status_code == 200  # the headers went out with the first event; the failure is the last event
    assert "final" not in [name for name, _ in events]
    name, data = events[-1]
    assert name == "error" and data["dependency"] == "mcp-web-search" and data["status"] == 502
    assert "server gone" in data["error"]


def test_a_failure_before_the_first_event_is_a_plain_5xx(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, retrieve_error=AgentError("vector-store", "no collection"))
    reply = stream_reply(sup)
    assert reply.status_code == 503 and reply.headers["content-type"].startswith("application/json")
    assert reply.json()["dependency"] == "vector-store"


def test_the_non_streamed_answer_is_the_streamed_final(isolated_settings) -> None:
    sup = scripted_supervisor(isolated_settings, verdict=1)
    tc = TestClient(agent_api.create_app(lambda: sup, api_key=KEY))
    whole = tc.post("/query", json={"question": "Why is my GPU pod stuck in Pending?"}, headers=AUTH).json()
    final = read_events(stream_reply(sup))[-1][1]
    assert {k: v for k, v in whole.items() if k not in ("timings", "first_token_s", "steps")} == \
        {k: v for k, v in final.items() if k not in ("timings", "first_token_s", "steps")}


def test_health_answers_while_a_query_runs() -> None:
    app = agent_api.create_app(lambda: SlowSupervisor(2.0), api_key=KEY)
    with TestClient(app) as tc:
        done: dict[str, int] = {}
        worker = threading.Thread(target=lambda: done.setdefault(
            "status", tc.post("/query", json={"question": "slow?"}, headers=AUTH).status_code))
        worker.start()
        time.sleep(0.3)
        assert tc.get("/health").status_code == 200
        assert "status" not in done  # the query is still running: /health was not blocked behind it
        worker.join()
        assert done["status"] == 200


def test_unreachable_gateway_is_a_5xx_naming_it(isolated_settings) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    gateway = Endpoint(dead, SecretStr("sk-test"), isolated_settings.served_chat_model, "gateway (test)")
    sup = build_supervisor(Target("local", isolated_settings), gateway=gateway)
    try:
        tc = TestClient(agent_api.create_app(lambda: sup, api_key=KEY))
        reply = tc.post("/query", json={"question": "Why is my GPU pod stuck in Pending?"}, headers=AUTH)
    finally:
        sup.close()
    assert reply.status_code == 502
    assert reply.json()["dependency"] == "gateway"
    assert "gateway" in reply.json()["error"]


def test_unreachable_web_search_is_a_5xx_naming_it(isolated_settings) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    t = Target("local", isolated_settings).with_environment(mcp_web_search_url=dead)
    assert t.mcp_url("web-search") == dead
    sup = build_supervisor(t)
    try:
        with pytest.raises(Exception) as info:
            sup.web_search("anything")
    finally:
        sup.close()
    assert getattr(info.value, "dependency", None) == "mcp-web-search"


def test_the_stack_knows_the_service() -> None:
    from helpers.local import stack

    service = stack.get_service("agent-api")
    assert service.port_setting == "agent_api_port" and service.health_path == "/health"
