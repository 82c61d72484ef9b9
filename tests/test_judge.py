"""The judge keeps ragas' words and ragas' score: its prompt file equals ragas' ContextPrecisionPrompt, its average
precision equals ragas' own, and the ragas LLM of notebook 09 carries the traceparent and its token cap."""

from __future__ import annotations

import importlib.metadata
import itertools

import pytest
from pydantic import SecretStr

from helpers.layers.agent import judge
from helpers.target import Endpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ragas 0.4.3 and its imports

CASES = [
    ("Why is my GPU pod stuck in Pending?", "No node fits: the GPU pool's limits are reached.", "No node fits [1]."),
    ('A "quoted" question\twith a tab?', "Line one\nline two \\ back\\slash / é ü 中文 \u2028 \x01", "Yes – [1]."),
    ("", "", ""),
]


@pytest.fixture(scope="module")
def ragas_prompt():
    judge.prepare_environment()
    from ragas.metrics._context_precision import QAC, ContextPrecisionPrompt

    return ContextPrecisionPrompt(), QAC


def test_the_pinned_ragas_is_the_one_the_prompt_file_was_taken_from() -> None:
    assert importlib.metadata.version("ragas") == judge.RAGAS_VERSION


@pytest.mark.parametrize("question, context, answer", CASES)
def test_the_prompt_is_ragas_own_to_the_character(ragas_prompt, question: str, context: str, answer: str) -> None:
    prompt, qac = ragas_prompt
    assert judge.context_precision_prompt(question, context, answer) == prompt.to_string(
        qac(question=question, context=context, answer=answer))


def test_the_fixed_instructions_come_first_so_the_prompt_cache_keeps_them() -> None:
    a = judge.context_precision_prompt("q1", "c1", "a1")
    b = judge.context_precision_prompt("q2", "c2", "a2")
    shared = len([1 for x, y in itertools.takewhile(lambda p: p[0] == p[1], zip(a, b))])
    assert shared == len(judge.prompt_prefix()) + len('input: {\n    "question": "q') > 3000


@pytest.mark.parametrize("verdicts", [[1], [0], [1, 0], [0, 1], [1, 1], [0, 0], [1, 0, 1], [0, 1, 1], [0, 0, 1]])
def test_average_precision_is_ragas_definition(verdicts: list[int]) -> None:
    judge.prepare_environment()
    from ragas.metrics import LLMContextPrecisionWithoutReference
    from ragas.metrics._context_precision import Verification

    metric = LLMContextPrecisionWithoutReference()
    ragas_score = metric._calculate_average_precision([Verification(reason="", verdict=v) for v in verdicts])
    assert judge.average_precision(verdicts) == pytest.approx(ragas_score)


def test_the_verdict_schema_allows_only_zero_or_one() -> None:
    assert judge.VERDICT_SCHEMA["properties"]["verdict"]["enum"] == [0, 1]
    reasoned = judge.reasoned_schema(80)
    assert list(reasoned["properties"]) == ["reason", "verdict"]  # reason first, as ragas asks
    assert reasoned["properties"]["reason"]["maxLength"] == 80


def test_notebook_9s_ragas_llm_carries_traceparent_and_its_cap() -> None:
    endpoint = Endpoint("http://127.0.0.1:9/v1", SecretStr("sk"), "reasoning", "nothing")
    llm = judge.ragas_llm(endpoint, max_tokens=77)
    chat = llm.langchain_llm
    assert chat.max_tokens == 77 and chat.temperature == 0
    from helpers.layers.observability import tracing

    assert tracing.add_trace_context in chat.http_client.event_hooks["request"]
    assert tracing.add_trace_context_async in chat.http_async_client.event_hooks["request"]
