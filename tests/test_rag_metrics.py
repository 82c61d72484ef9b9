"""The direct RAGAs metrics keep ragas' words and ragas' scores: prompts equal to ragas 0.4.3's, schemas the model
server can compile, scores computed as ragas computes them, every failure classified (offline), and well-formed
judgements from the real local model (services)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from helpers.layers.agent import judge, rag_metrics
from helpers.target import Endpoint

QUESTIONS = [("What is Karpenter?", "Karpenter adds nodes. It removes empty ones.", ["Karpenter provisions nodes.", "Ünïcode “quotes” \\ and\nnew lines"])]


@pytest.fixture(scope="module")
def ragas_prompts() -> Any:
    judge.prepare_environment()
    from ragas.metrics._answer_relevance import ResponseRelevanceInput, ResponseRelevancePrompt
    from ragas.metrics._faithfulness import (
        NLIStatementInput,
        NLIStatementPrompt,
        StatementGeneratorInput,
        StatementGeneratorPrompt,
    )

    return SimpleNamespace(
        statements=lambda q, a: StatementGeneratorPrompt().to_string(StatementGeneratorInput(question=q, answer=a)),
        nli=lambda c, s: NLIStatementPrompt().to_string(NLIStatementInput(context=c, statements=s)),
        relevance=lambda r: ResponseRelevancePrompt().to_string(ResponseRelevanceInput(response=r)))


@pytest.mark.parametrize(("question", "answer", "contexts"), QUESTIONS)
def test_the_prompts_are_ragas_own_to_the_character(ragas_prompts: Any, question: str, answer: str,
                                                     contexts: list[str]) -> None:
    import ragas

    assert ragas.__version__ == judge.RAGAS_VERSION
    assert rag_metrics.ragas_prompt("statements", {"question": question, "answer": answer}) == \
        ragas_prompts.statements(question, answer)
    statements = ["Karpenter adds nodes.", "It removes “empty” ones."]
    assert rag_metrics.ragas_prompt("nli", {"context": "\n".join(contexts), "statements": statements}) == \
        ragas_prompts.nli("\n".join(contexts), statements)
    assert rag_metrics.ragas_prompt("relevance", {"response": answer}) == ragas_prompts.relevance(answer)


def test_the_schemas_compile_to_llama_cpp_grammars() -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    for schema in (rag_metrics.statements_schema(), rag_metrics.verdicts_schema(3), rag_metrics.relevance_schema()):
        assert "root ::=" in json_schema_to_gbnf(json.dumps(schema))


class ScriptedJudge:
    """An OpenAI-client-shaped object that answers each chat call with the next scripted reply (or raises it)."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies, self.requests = list(replies), []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **body: Any) -> Any:
        self.requests.append(body)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=reply))], usage=None)

    def close(self) -> None:
        pass


class FixedEmbedder:
    """Unit vectors chosen per text, or a failure."""

    def __init__(self, vectors: dict[str, list[float]] | None = None, error: Exception | None = None) -> None:
        self.vectors, self.error = vectors or {}, error

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.error:
            raise self.error
        return np.array([np.array(self.vectors[t]) / np.linalg.norm(self.vectors[t]) for t in texts])


def metrics(replies: list[Any], embedder: Any = None) -> tuple[rag_metrics.RagMetrics, ScriptedJudge]:
    client = ScriptedJudge(replies)
    endpoint = Endpoint("http://127.0.0.1:9/v1", None, "reasoning", "test")
    return rag_metrics.RagMetrics(endpoint, endpoint, client=client, embedder=embedder or FixedEmbedder()), client


def test_faithfulness_is_the_share_of_supported_statements_asked_in_two_calls() -> None:
    m, client = metrics(['{"statements": ["a", "b", "c"]}',
                         '{"statements": [{"verdict": 1}, {"verdict": 0}, {"verdict": 1}]}'])
    out = m.faithfulness("q", "answer", ["ctx one", "ctx two"])
    assert (out.status, round(out.score, 3), out.calls) == ("ok", 0.667, 2)
    nli = client.requests[1]
    assert nli["response_format"]["schema"]["properties"]["statements"]["minItems"] == 3 == \
        nli["response_format"]["schema"]["properties"]["statements"]["maxItems"]
    assert '"context": "ctx one\\nctx two"' in nli["messages"][0]["content"] and nli["temperature"] == 0
    assert len(out.replies) == 2


@pytest.mark.parametrize(("replies", "status", "detail"), [
    (['{"statements": ["a", "b"'], "parse_failure", "not JSON"),
    (['{"statements": []}'], "parse_failure", "no statements"),
    (['{"statements": ["a", "b"]}', '{"statements": [{"verdict": 1}]}'], "parse_failure", "1 verdicts for 2"),
    ([TimeoutError("slow")], "error", "TimeoutError"),
])
def test_faithfulness_failures_are_classified_and_keep_the_reply(replies: list[Any], status: str, detail: str) -> None:
    m, _ = metrics(replies)
    out = m.faithfulness("q", "answer", ["ctx"])
    assert out.status == status and out.score is None and detail in out.detail
    if status == "parse_failure":
        assert out.replies  # the judge's own words, for a look at why


def test_answer_relevancy_is_the_cosine_or_zero_when_noncommittal() -> None:
    emb = FixedEmbedder({"What is X?": [1, 0], "What is Y?": [0.6, 0.8]})
    m, _ = metrics(['{"question": "What is Y?", "noncommittal": 0}'], emb)
    out = m.answer_relevancy("What is X?", "Y is a thing.")
    assert out.status == "ok" and out.score == pytest.approx(0.6)
    m, _ = metrics(['{"question": "What is Y?", "noncommittal": 1}'], emb)
    out = m.answer_relevancy("What is X?", "I do not know.")
    assert (out.status, out.score) == ("ok", 0.0) and "noncommittal" in out.detail
    m, _ = metrics(['{"question": "What is Y?", "noncommittal": 0}'], FixedEmbedder(error=RuntimeError("down")))
    out = m.answer_relevancy("What is X?", "Y.")
    assert out.status == "error" and out.score is None and "embedding" in out.detail  # never a made-up vector


def test_context_precision_asks_in_rank_order_until_the_score_is_fixed() -> None:
    m, client = metrics(['{"verdict": 1}'])
    out = m.context_precision("q", ["c1", "c2"], "the reference")
    assert (out.status, out.score, out.calls) == ("ok", 1.0, 1)  # a useful first of two fixes it at 1.0
    assert '"answer": "the reference"' in client.requests[0]["messages"][0]["content"]
    m, _ = metrics(['{"verdict": 0}', '{"verdict": 1}', '{"verdict": 0}'])
    out = m.context_precision("q", ["c1", "c2", "c3"], "ref", "without reference")
    assert out.score == pytest.approx(judge.average_precision([0, 1, 0])) and out.variant == "without reference"
    m, _ = metrics(['{"verd'])
    assert m.context_precision("q", ["c1"], "ref").status == "parse_failure"


@pytest.fixture
def model_server_metrics(isolated_settings):
    from helpers.local import stack

    try:
        for name in ("model-server", "embedding-server"):
            stack.ensure(name)
        s = isolated_settings
        chat = Endpoint(s.model_server_url, s.model_server_api_key, s.served_chat_model, "model server")
        emb = Endpoint(s.embedding_server_url, s.model_server_api_key, s.served_embedding_model, "embedding server")
        m = rag_metrics.RagMetrics(chat, emb)
        yield m
        m.close()
    finally:
        stack.down()


@pytest.mark.services
def test_the_local_judge_answers_every_metric_in_the_bounded_shape(model_server_metrics) -> None:
    m = model_server_metrics
    question = "What does Karpenter do when a pod is Pending?"
    answer = "Karpenter launches a new node that fits the Pending pod, then the scheduler binds the pod to it."
    contexts = ["Karpenter watches for Pending pods and launches nodes that fit them."]
    outcomes = [m.faithfulness(question, answer, contexts), m.answer_relevancy(question, answer),
                m.context_precision(question, contexts, answer)]
    for out in outcomes:
        assert out.status == "ok", (out.metric, out.detail, out.replies)
        assert 0.0 <= out.score <= 1.0
    assert outcomes[0].calls == 2 and outcomes[1].calls == 1 and outcomes[2].calls == 1
