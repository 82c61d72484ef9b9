"""RAGAs' three metrics asked straight of the judge: ragas' own prompts, ragas' own scores, grammar-bounded replies.

Notebook 09's evaluation. Each metric sends ragas 0.4.3's prompt text (instruction, output schema, examples: kept as
data in helpers/data/ragas_*_prompt.txt and checked equal to ragas' `to_string` by tests/test_rag_metrics.py) as one
user message, with `response_format: {"type": "json_object", "schema": ...}` so the model server's grammar allows only
the JSON ragas' parser expects, bounded in length, at temperature 0:

    faithfulness       1. the statements of the answer (StatementGeneratorPrompt; at most MAX_STATEMENTS, each
                          at most STATEMENT_CHARS characters)
                       2. one verdict per statement against the contexts (NLIStatementPrompt; exactly one
                          {"verdict": 0|1} per statement, in order, without ragas' per-statement echo and reason)
                       score: share of statements with verdict 1 (ragas' _compute_score)
    answer_relevancy   the question the answer answers and whether it is noncommittal (ResponseRelevancePrompt,
                       strictness 1); score: cosine of its embedding to the real question's, 0 if noncommittal
    context_precision  one verdict per context against the reference answer (ContextPrecisionPrompt, judge.Judge);
                       score: ragas' average precision in rank order, asking only until the score is fixed

Through ragas and LangChain the same judge wrote ragas' 40-80-token reasons and long statement lists, and a reply
cut at the token cap was an `LLMDidNotFinishException`; here a reply is a few tokens per verdict. Every judgement
still gets a status (`ok`, `parse_failure`, `error`) and keeps the judge's raw reply for a look at why.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from helpers.config import ROOT
from helpers.layers.agent.judge import JUDGE_TIMEOUT, Judge, average_precision, exact_precision
from helpers.layers.agent.steps import CacheHits
from helpers.target import Endpoint

DATA = ROOT / "helpers" / "data"
PROMPT_FILES = {"statements": DATA / "ragas_statement_prompt.txt", "nli": DATA / "ragas_nli_prompt.txt",
                "relevance": DATA / "ragas_relevance_prompt.txt"}
MAX_STATEMENTS = 6  # an answer of at most 128 tokens rarely holds more claims; more are not judged
STATEMENT_CHARS = 160
QUESTION_CHARS = 200


@functools.cache
def prompt_prefix(kind: str) -> str:
    """ragas' fixed instruction, schema and examples of one prompt (`statements`, `nli`, `relevance`)."""
    return PROMPT_FILES[kind].read_text(encoding="utf-8")


def ragas_prompt(kind: str, data: dict[str, Any]) -> str:
    """The full prompt for one input, character for character what ragas' PydanticPrompt.to_string gives."""
    return f"{prompt_prefix(kind)}input: {json.dumps(data, indent=4, ensure_ascii=False)}\nOutput: "


def statements_schema(max_items: int = MAX_STATEMENTS, max_chars: int = STATEMENT_CHARS) -> dict[str, Any]:
    """ragas' StatementGeneratorOutput, bounded: 1 to `max_items` statements of at most `max_chars` characters."""
    return {"type": "object", "required": ["statements"], "properties": {"statements": {
        "type": "array", "minItems": 1, "maxItems": max_items,
        "items": {"type": "string", "minLength": 1, "maxLength": max_chars}}}}


def verdicts_schema(n: int) -> dict[str, Any]:
    """ragas' NLIStatementOutput without the echo and reason: exactly `n` verdicts, in the statements' order."""
    verdict = {"type": "object", "required": ["verdict"], "properties": {"verdict": {"type": "integer", "enum": [0, 1]}}}
    return {"type": "object", "required": ["statements"], "properties": {"statements": {
        "type": "array", "minItems": n, "maxItems": n, "items": verdict}}}


def relevance_schema(max_chars: int = QUESTION_CHARS) -> dict[str, Any]:
    """ragas' ResponseRelevanceOutput: a question (bounded) and the noncommittal flag."""
    return {"type": "object", "required": ["question", "noncommittal"], "properties": {
        "question": {"type": "string", "maxLength": max_chars},
        "noncommittal": {"type": "integer", "enum": [0, 1]}}}


@dataclass
class Outcome:
    """One metric on one answer: the score (None unless ok), its status, what happened, the judge's raw replies."""

    metric: str
    score: float | None
    status: str  # "ok", "parse_failure", "error"
    detail: str = ""
    seconds: float = 0.0
    variant: str = ""
    replies: list[str] = field(default_factory=list)  # the judge's raw JSON, in call order
    calls: int = 0
    cache_hits: int = 0  # calls the gateway answered from its response cache (their seconds are a look-up)


class JudgeFailed(Exception):
    """One judge call gave nothing usable; `status` says whether it was unreadable or an error."""

    def __init__(self, status: str, detail: str, reply: str = "") -> None:
        super().__init__(detail)
        self.status, self.detail, self.reply = status, detail, reply


class RagMetrics:
    """Faithfulness, answer relevancy and context precision of one answer, one judge call at a time."""

    def __init__(self, judge: Endpoint, embeddings: Endpoint, timeout: float = JUDGE_TIMEOUT,
                 max_tokens: int = 512, client: Any = None, embedder: Any = None) -> None:
        from helpers.layers.observability import tracing
        from helpers.layers.rag.knowledge import Embedder

        self.endpoint = judge
        self.max_tokens = max_tokens  # stops a server that ignores the schema; a reply cut there is a parse failure
        self.cache_hits = CacheHits()  # a cached judgement is the same reply (temperature 0), only its time differs
        self.client = client or judge.client(timeout=timeout, max_retries=1,
                                             http_client=self.cache_hits.watch(tracing.http_client(timeout=timeout)))
        self.context_judge = Judge(judge, client=self.client)
        self.embedder = embedder or Embedder(embeddings)

    def ask(self, kind: str, data: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """One judge call with ragas' prompt and a schema; (parsed JSON, raw reply) or JudgeFailed."""
        try:
            reply = self.client.chat.completions.create(
                model=self.endpoint.model, temperature=0, max_tokens=self.max_tokens,
                messages=[{"role": "user", "content": ragas_prompt(kind, data)}],
                response_format={"type": "json_object", "schema": schema})
        except Exception as exc:  # noqa: BLE001 - every failure is classified and shown
            raise JudgeFailed("error", f"{type(exc).__name__}: {str(exc)[:200]}") from None
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        try:
            parsed = json.loads(text)
        except ValueError:
            raise JudgeFailed("parse_failure", f"not JSON (cut at {self.max_tokens} tokens?): {text[:160]!r}",
                              text) from None
        if not isinstance(parsed, dict):
            raise JudgeFailed("parse_failure", f"not a JSON object: {text[:160]!r}", text)
        return parsed, text

    @contextmanager
    def judging(self, result: Outcome) -> Iterator[Outcome]:
        """Time one metric's calls and count its cache hits; a JudgeFailed inside becomes the outcome's status."""
        started, hits = time.perf_counter(), self.cache_hits.count
        try:
            yield result
        except JudgeFailed as failed:
            result.status, result.detail = failed.status, failed.detail
            if failed.reply and failed.reply not in result.replies:
                result.replies.append(failed.reply)
        finally:
            result.seconds = round(time.perf_counter() - started, 2)
            result.cache_hits = self.cache_hits.count - hits

    def faithfulness(self, question: str, answer: str, contexts: Sequence[str]) -> Outcome:
        """Share of the answer's statements the contexts support (two calls: statements, then verdicts)."""
        result = Outcome("faithfulness", None, "ok")
        with self.judging(result):
            found, raw = self.ask("statements", {"question": question, "answer": answer}, statements_schema())
            result.replies.append(raw)
            result.calls += 1
            statements = [s for s in found.get("statements") or [] if isinstance(s, str) and s.strip()]
            if not statements:
                raise JudgeFailed("parse_failure", "the judge listed no statements", raw)
            judged, raw = self.ask("nli", {"context": "\n".join(contexts), "statements": statements},
                                   verdicts_schema(len(statements)))
            result.replies.append(raw)
            result.calls += 1
            verdicts = [v.get("verdict") for v in judged.get("statements") or [] if isinstance(v, dict)]
            if len(verdicts) != len(statements) or any(v not in (0, 1) for v in verdicts):
                raise JudgeFailed("parse_failure", f"{len(verdicts)} verdicts for {len(statements)} statements", raw)
            result.score = sum(verdicts) / len(verdicts)
            result.detail = f"{sum(verdicts)} of {len(verdicts)} statements supported"
        return result

    def answer_relevancy(self, question: str, answer: str) -> Outcome:
        """Cosine of the question the judge reads from the answer to the real one; 0 for a noncommittal answer."""
        result = Outcome("answer_relevancy", None, "ok")
        with self.judging(result):
            found, raw = self.ask("relevance", {"response": answer}, relevance_schema())
            result.replies.append(raw)
            result.calls += 1
            generated = str(found.get("question") or "").strip()
            if not generated:
                raise JudgeFailed("parse_failure", "the judge wrote no question", raw)
            if found.get("noncommittal") == 1:
                result.score, result.detail = 0.0, f"noncommittal (the judge's question: {generated[:120]!r})"
            else:
                try:
                    real, made = self.embedder.embed([question, generated])
                except Exception as exc:  # noqa: BLE001 - the embedding call failed: an error, never a made-up vector
                    raise JudgeFailed("error", f"embedding: {exc}") from None
                result.score = float(np.dot(real, made))  # unit vectors: the dot product is the cosine
                result.detail = f"the judge's question: {generated[:120]!r}"
        return result

    def context_precision(self, question: str, contexts: Sequence[str], reference: str,
                          variant: str = "with reference") -> Outcome:
        """ragas' average precision of per-context verdicts against `reference`, in rank order, asked until fixed.

        Without a reference answer ragas judges against the agent's own answer (`variant="without reference"`)."""
        result = Outcome("context_precision", None, "ok", variant=variant)
        verdicts: list[int] = []
        with self.judging(result):
            for i, context in enumerate(contexts):
                if exact_precision(verdicts, len(contexts) - i) is not None:
                    break
                v = self.context_judge.verdict(question, context, reference)
                result.calls += 1
                if v.verdict is None:
                    result.status = "error" if v.error and "not JSON" not in v.error and "no verdict" not in v.error \
                        else "parse_failure"
                    result.detail = v.error or "no verdict"
                    break
                verdicts.append(v.verdict)
                result.replies.append(json.dumps({"verdict": v.verdict}))
            if result.status == "ok":
                fixed = exact_precision(verdicts, len(contexts) - len(verdicts))
                result.score = fixed if fixed is not None else average_precision(verdicts)
                if math.isnan(result.score):
                    result.score = 0.0
                result.detail = f"verdicts {verdicts} of {len(contexts)} contexts" + \
                    ("" if len(verdicts) == len(contexts) else " (the rest cannot change the score)")
        return result

    def close(self) -> None:
        """Close the judge's HTTP client."""
        self.client.close()
