"""The agent API: bearer key, 4xx on bad input, 5xx naming a failing dependency, no blocked event loop."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from pydantic import SecretStr

from helpers.layers.agent.supervisor import AgentAnswer, build_supervisor
from helpers.target import Endpoint, Target
from services.agent_api import app as agent_api
from tests.conftest import free_port

KEY = "sk-agent-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


class SlowSupervisor:
    """Answers after a pause, so a test can check that /health is served meanwhile."""

    def __init__(self, pause: float = 1.0) -> None:
        self.pause = pause

    def ask(self, question: str, save_as: str | None = None) -> AgentAnswer:
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
    assert {"answer", "route", "sources", "relevance", "timings", "trace_id"} <= set(reply.json())


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
