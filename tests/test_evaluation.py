"""The evaluation module offline: question files, failure classification, the summary beside parse-failure rates."""

from __future__ import annotations

import json
import math

import pytest

from helpers.layers.agent import evaluation as ev


def test_parse_questions_accepts_the_usual_shapes() -> None:
    qs = ev.parse_questions({"questions": [
        {"id": "a", "question": " What is Karpenter? ", "expected_route": "knowledge_base", "reference": "A node autoscaler."},
        {"question": "Weather in Oslo today?", "route": "web_search"},
        "What is a KV cache?",
    ]})
    assert [q.id for q in qs] == ["a", "q02", "q03"]
    assert qs[0].question == "What is Karpenter?" and qs[0].reference == "A node autoscaler."
    assert qs[1].expected_route == "web_search" and qs[1].reference is None
    with pytest.raises(ev.EvaluationError):
        ev.parse_questions({"questions": []})
    with pytest.raises(ev.EvaluationError, match="question 1"):
        ev.parse_questions([{"id": "x"}])


def test_load_questions_puts_referenced_ones_first_and_limits(tmp_path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text("questions:\n - {question: web one, expected_route: web_search}\n"
                    " - {question: kb one, reference: ref}\n - {question: kb two, reference: ref2}\n")
    assert [q.question for q in ev.load_questions(path, limit=2)] == ["kb one", "kb two"]
    assert len(ev.load_questions(path)) == 3
    with pytest.raises(ev.EvaluationError, match="does not exist"):
        ev.load_questions(tmp_path / "missing.yaml")


def test_the_fallback_question_set_has_references() -> None:
    qs = ev.load_questions(ev.FALLBACK_QUESTIONS_FILE)
    assert len(qs) >= 3 and all(q.reference and q.expected_route == "knowledge_base" for q in qs)


def test_classify_separates_scores_parse_failures_and_errors() -> None:
    assert ev.classify(0.75) == (0.75, "ok", "")
    assert ev.classify(0) == (0.0, "ok", "")
    assert ev.classify(math.nan)[1] == "parse_failure"
    assert ev.classify("garbage")[1] == "parse_failure"

    class RagasOutputParserException(Exception):
        pass

    assert ev.classify(error=RagasOutputParserException("bad json"))[1] == "parse_failure"
    assert ev.classify(error=TimeoutError("slow"))[1] == "error"


def make_result(qid: str, route: str, expected: str, scores: dict[str, object]) -> ev.SampleResult:
    q = ev.EvalQuestion(qid, f"question {qid}", expected, "ref")
    outcomes = []
    for metric, value in scores.items():
        score, status, detail = ev.classify(value) if not isinstance(value, Exception) else ev.classify(error=value)
        outcomes.append(ev.Outcome(metric, score, status, detail, 1.0))
    return ev.SampleResult(ev.EvalSample(q, "answer", ["ctx"], route, "0" * 32), outcomes)


def test_summary_shows_each_mean_beside_its_parse_failure_rate() -> None:
    results = [
        make_result("1", "knowledge_base", "knowledge_base",
                    {"faithfulness": 1.0, "answer_relevancy": 0.8, "context_precision": 1.0}),
        make_result("2", "web_search", "knowledge_base",
                    {"faithfulness": math.nan, "answer_relevancy": 0.6, "context_precision": TimeoutError("t")}),
        make_result("3", "knowledge_base", "knowledge_base",
                    {"faithfulness": 0.5, "answer_relevancy": math.nan, "context_precision": 0.0}),
    ]
    rows = {r["metric"]: r for r in ev.summary_rows(results)}
    assert rows["faithfulness"]["mean score"] == 0.75 and rows["faithfulness"]["scored"] == "2/3"
    assert rows["faithfulness"]["judge parse failures"] == "1/3" and rows["faithfulness"]["parse-failure rate"] == "33%"
    assert rows["answer_relevancy"]["mean score"] == 0.7
    assert rows["context_precision"]["other errors"] == 1 and rows["context_precision"]["parse-failure rate"] == "0%"
    assert rows["context_precision"]["mean score"] == 0.5
    assert results[1].row()["faithfulness"] == "parse_failure" and results[0].row()["faithfulness"] == 1.0
    samples = [r.sample for r in results]
    assert ev.route_accuracy(samples) == (2, 3)


def test_langfuse_not_configured_says_so_and_save_writes_json(tmp_path) -> None:
    results = [make_result("1", "knowledge_base", "knowledge_base",
                           {"faithfulness": 1.0, "answer_relevancy": 0.8, "context_precision": 1.0})]
    sent, message = ev.send_to_langfuse(results, env={})
    assert sent == 0 and "not configured" in message
    path = ev.save(results, {"judge": "reasoning"}, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["summary"][0]["metric"] == "faithfulness" and saved["results"][0]["outcomes"][0]["score"] == 1.0
    assert set(saved["definitions"]) == set(ev.METRICS)
