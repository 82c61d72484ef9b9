"""The model server's request guard reads `max_completion_tokens` as `max_tokens` (llama-cpp-python 0.3.36 drops
the newer name, which langchain-openai, and so ragas, sends): offline through the ASGI middleware, and against the
real server with the judge's constrained verdict."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from services.llama_server import server as llama_server
from tests.test_model_server import _call_middleware


@pytest.mark.parametrize("body, expected", [
    ({"max_completion_tokens": 5}, {"max_tokens": 5}),
    ({"max_completion_tokens": 5, "max_tokens": 9}, {"max_tokens": 9}),  # an explicit max_tokens wins
    ({"max_completion_tokens": None}, {}),
    ({"max_tokens": 9}, {"max_tokens": 9}),
])
def test_max_completion_tokens_becomes_max_tokens(body: dict, expected: dict) -> None:
    had_it = "max_completion_tokens" in body
    assert llama_server.map_max_completion_tokens(body) is had_it
    assert body == expected


def test_the_guard_rewrites_the_body_the_app_reads() -> None:
    body = {"model": "reasoning", "messages": [], "max_completion_tokens": 7}
    status, _payload, seen = _call_middleware(body, "Bearer sk-test")
    assert status == 200 and json.loads(b"".join(seen)) == {"model": "reasoning", "messages": [], "max_tokens": 7}


@pytest.fixture
def chat_server(isolated_settings):
    from helpers.local import stack

    stack.ensure("model-server")
    yield OpenAI(base_url=isolated_settings.model_server_url,
                 api_key=isolated_settings.model_server_api_key.get_secret_value())
    stack.down()


@pytest.mark.services
def test_the_real_server_caps_a_reply_at_max_completion_tokens(chat_server) -> None:
    reply = chat_server.chat.completions.create(
        model="reasoning", messages=[{"role": "user", "content": "Write a long story about a cat."}],
        temperature=0, max_completion_tokens=5)
    assert reply.usage.completion_tokens <= 5 and reply.choices[0].finish_reason == "length"


@pytest.mark.services
def test_the_real_server_constrains_the_judge_to_a_verdict(chat_server, isolated_settings) -> None:
    from helpers.layers.agent.judge import Judge
    from helpers.target import Target

    judge = Judge(Target("local", isolated_settings).chat, client=chat_server)
    useful = judge.verdict("What does Karpenter do?", "Karpenter launches right-sized nodes for pending pods.",
                           "Karpenter launches right-sized nodes for pending pods [1].")
    assert useful.verdict in (0, 1) and useful.error is None
    assert useful.call.completion_tokens <= 10 and useful.call.prompt_tokens > 900  # ragas' instructions, examples
