"""RAGAs evaluation of the supervisor agent (notebook 09): faithfulness, answer relevancy, context precision.

    from helpers.layers.agent import evaluation
    questions = evaluation.load_questions(limit=3)
    samples = evaluation.collect_with_agent(questions, supervisor)        # or collect_direct(...) without the agent
    results = evaluation.score(samples, evaluation.ragas_metrics())
    evaluation.summary_rows(results)                                      # score beside its parse-failure rate

A small judge (the 0.5B chat model behind the gateway's `reasoning` route) often writes output ragas cannot
parse; ragas then raises or returns NaN. Those are never averaged in as zeros or hidden: every scoring has a
status (`ok`, `parse_failure`, `error`), and each mean is shown with how many scorings it rests on and the
share the judge failed to parse.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.config import ROOT
from helpers.coroutines import run_coroutine
from helpers.errors import WorkshopError
from helpers.layers.agent.rag_metrics import Outcome, RagMetrics
from helpers.target import Endpoint

if TYPE_CHECKING:
    from helpers.target import Target

QUESTIONS_FILE = ROOT / "helpers" / "data" / "agent_questions.yaml"  # notebook 08's set (the agent's contract)
FALLBACK_QUESTIONS_FILE = ROOT / "helpers" / "data" / "eval_questions_fallback.yaml"  # 4 knowledge-base questions
RESULTS_DIR = ROOT / "build" / "evaluation"  # git-ignored
METRICS = ("faithfulness", "answer_relevancy", "context_precision")
JUDGE_MAX_TOKENS = 384  # faithfulness writes a JSON list of statements, then one verdict per statement
JUDGE_TIMEOUT = 180.0  # seconds per judge call: the local model server answers one request at a time
DEFINITIONS = {
    "faithfulness": "share of the answer's claims that the retrieved contexts support (judge: split into "
                    "statements, then one verdict per statement)",
    "answer_relevancy": "how well the answer addresses the question: the judge writes a question for the answer; "
                        "cosine similarity of its embedding to the real question (0 if the answer is noncommittal)",
    "context_precision": "are the useful contexts ranked first? one verdict per context, rank-weighted (against "
                         "the reference answer when there is one, else against the agent's answer)",
}


class EvaluationError(WorkshopError):
    """The evaluation cannot run as asked; the message says what to do."""


# ---------------------------------------------------------------- questions


@dataclass(frozen=True)
class EvalQuestion:
    """One evaluation question: the expected route and, for knowledge-base questions, a reference answer."""

    id: str
    question: str
    expected_route: str | None = None
    reference: str | None = None


def parse_questions(data: Any) -> list[EvalQuestion]:
    """Questions from the YAML structure (a list, or a mapping with a `questions` list); tolerant of key names."""
    items = data.get("questions", data) if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise EvaluationError("the question file holds no list of questions (expected `questions: [...]`)")
    out = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, str):
            item = {"question": item}
        text = item.get("question") or item.get("q")
        if not isinstance(text, str) or not text.strip():
            raise EvaluationError(f"question {i} has no `question` text")
        route = item.get("expected_route") or item.get("route")
        reference = item.get("reference") or item.get("reference_answer") or item.get("answer")
        out.append(EvalQuestion(str(item.get("id") or f"q{i:02d}"), text.strip(), route,
                                reference.strip() if isinstance(reference, str) and reference.strip() else None))
    return out


def load_questions(path: Path | str = QUESTIONS_FILE, limit: int | None = None,
                   references_first: bool = True) -> list[EvalQuestion]:
    """The question set (helpers/data/agent_questions.yaml); with `limit`, questions with references come first."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path} does not exist: it comes with notebook 08's agent (helpers/layers/agent/supervisor.py).")
    questions = parse_questions(yaml.safe_load(path.read_text()))
    if references_first:
        questions = sorted(questions, key=lambda q: q.reference is None)  # stable: file order otherwise
    return questions[:limit] if limit else questions


# ---------------------------------------------------------------- samples: what the agent answered


@dataclass
class EvalSample:
    """One answered question: what ragas scores (question, answer, contexts, reference) and where it came from."""

    question: EvalQuestion
    answer: str
    contexts: list[str]
    route: str | None = None
    trace_id: str | None = None
    seconds: float = 0.0
    source: str = "agent"  # "agent" (helpers.layers.agent.supervisor) or "direct" (retrieval + gateway, without the agent)
    error: str = ""  # why there is no answer (the agent raised), else empty
    cache_hits: int = 0  # the agent's model calls the gateway answered from its response cache


def collect_with_agent(questions: Iterable[EvalQuestion], supervisor: Any, progress: bool = True) -> list[EvalSample]:
    """Ask the supervisor agent every question; keep its answer, the contexts as it read them, route and trace."""
    from tqdm import tqdm

    samples = []
    for q in tqdm(list(questions), desc="agent answers", unit="question", disable=not progress):
        started = time.perf_counter()
        try:
            answer = supervisor.ask(q.question)
        except Exception as error:  # noqa: BLE001 - one failed question is recorded and shown, not fatal
            samples.append(EvalSample(q, "", [], None, None, round(time.perf_counter() - started, 2), "agent",
                                      f"{type(error).__name__}: {str(error)[:200]}"))
            continue
        samples.append(EvalSample(q, answer.answer, list(answer.contexts), answer.route, answer.trace_id,
                                  round(time.perf_counter() - started, 2), "agent", cache_hits=answer.cache_hits))
    return samples


def collect_direct(questions: Iterable[EvalQuestion], t: Target, k: int = 3,
                   max_tokens: int = 160, progress: bool = True) -> list[EvalSample]:
    """Without the agent: retrieve k chunks (helpers.layers.rag.knowledge + the vector store), answer through the gateway."""
    from tqdm import tqdm

    from helpers.layers.rag import knowledge

    embedder = knowledge.Embedder(t.gateway_embeddings)
    client = t.gateway.client(timeout=300)
    store = t.vector_store()
    samples = []
    try:
        for q in tqdm(list(questions), desc="direct answers", unit="question", disable=not progress):
            started = time.perf_counter()
            hits = knowledge.search(store, embedder, q.question, k=k)
            contexts = [h.text for h in hits]
            sources = "\n\n".join(f"[{i}] {h.title}\n{' '.join(h.text.split())[:1200]}" for i, h in enumerate(hits, 1))
            reply = client.chat.completions.create(
                model=t.gateway.model, temperature=0, max_tokens=max_tokens,
                messages=[{"role": "system", "content": "Answer only from the numbered sources, in at most four "
                                                        "sentences, citing them like [1]."},
                          {"role": "user", "content": f"Sources:\n\n{sources}\n\nQuestion: {q.question}"}])
            samples.append(EvalSample(q, reply.choices[0].message.content or "", contexts, "knowledge_base", None,
                                      round(time.perf_counter() - started, 2), "direct"))
    finally:
        store.close()
    return samples


# ---------------------------------------------------------------- scoring


@dataclass
class SampleResult:
    """A sample with its three outcomes."""

    sample: EvalSample
    outcomes: list[Outcome] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        """A table row: the question, route, each metric's score or failure, and what judging it cost."""
        row: dict[str, object] = {"id": self.sample.question.id, "route": self.sample.route or "-",
                                  "expected": self.sample.question.expected_route or "-",
                                  "answer s": self.sample.seconds}
        for o in self.outcomes:
            row[o.metric] = round(o.score, 2) if o.status == "ok" and o.score is not None else o.status
        row["judge calls"] = sum(o.calls for o in self.outcomes)
        row["judge s"] = round(sum(o.seconds for o in self.outcomes), 1)
        row["judge cache hits"] = sum(o.cache_hits for o in self.outcomes)
        row["parse failures"] = sum(1 for o in self.outcomes if o.status == "parse_failure")
        return row


def classify(value: Any = None, error: BaseException | None = None) -> tuple[float | None, str, str]:
    """(score, status, detail) from what a ragas metric returned or raised: NaN and parser errors are parse failures."""
    if error is not None:
        name = type(error).__name__
        if "Parser" in name or "OutputParser" in name or "ValidationError" in name or "JSONDecode" in name:
            return None, "parse_failure", f"{name}: {str(error)[:160]}"
        return None, "error", f"{name}: {str(error)[:160]}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, "parse_failure", f"not a number: {value!r}"
    if math.isnan(number):
        return None, "parse_failure", "NaN: the judge's output could not be used"
    return number, "ok", ""


def direct_metrics(t: Target, judge: Endpoint | None = None) -> RagMetrics:
    """The three metrics asked straight of the judge (default: the gateway's chat route) with ragas' prompts."""
    return RagMetrics(judge or t.gateway, t.gateway_embeddings, timeout=JUDGE_TIMEOUT)


def judge_endpoint(t: Target, model: str = "", base_url: str = "", key: str = "") -> Endpoint:
    """The judge: the gateway's chat route, another gateway route (`model`), or any OpenAI-compatible `base_url`."""
    if not model and not base_url:
        return t.gateway
    if base_url:
        from pydantic import SecretStr

        return Endpoint(base_url.rstrip("/"), SecretStr(key) if key else None, model or t.gateway.model,
                        f"judge at {base_url}")
    return Endpoint(t.gateway.base_url, t.gateway.api_key, model, f"{t.gateway.via}, route {model!r}")


def ragas_metrics(t: Target, llm: Any = None, embeddings: Any = None) -> dict[str, Any]:
    """ragas itself (through LangChain) on the gateway: the same three metrics, slower, for a comparison."""
    from helpers.layers.agent import judge

    judge.prepare_environment()
    from ragas.metrics import (
        Faithfulness,
        LLMContextPrecisionWithoutReference,
        LLMContextPrecisionWithReference,
        ResponseRelevancy,
    )

    llm = llm or judge.ragas_llm(t.gateway, max_tokens=JUDGE_MAX_TOKENS, timeout=JUDGE_TIMEOUT)
    embeddings = embeddings or judge.ragas_embeddings(t.gateway_embeddings)
    return {
        "faithfulness": Faithfulness(llm=llm),
        "answer_relevancy": ResponseRelevancy(llm=llm, embeddings=embeddings, strictness=1),  # 1 judge call, not 3
        "context_precision": LLMContextPrecisionWithReference(llm=llm),
        "context_precision_without_reference": LLMContextPrecisionWithoutReference(llm=llm),
    }


async def ascore_sample(sample: EvalSample, metrics: dict[str, Any]) -> list[Outcome]:
    """Score one sample with each metric, one after the other (the local model server answers one at a time)."""
    from ragas import SingleTurnSample

    outcomes = []
    for name in METRICS:
        kwargs: dict[str, Any] = {"user_input": sample.question.question, "response": sample.answer,
                                  "retrieved_contexts": sample.contexts or [""]}
        metric, variant = metrics[name], ""
        if name == "context_precision":
            if sample.question.reference:
                kwargs["reference"] = sample.question.reference
                variant = "with reference"
            else:
                metric, variant = metrics["context_precision_without_reference"], "without reference"
        started = time.perf_counter()
        if sample.error or not sample.contexts:
            outcomes.append(Outcome(name, None, "error", sample.error or "no contexts to judge", 0.0, variant))
            continue
        try:
            value = await metric.single_turn_ascore(SingleTurnSample(**kwargs))
            score, status, detail = classify(value)
        except Exception as error:  # noqa: BLE001 - every failure is classified and shown, never hidden
            score, status, detail = classify(error=error)
        outcomes.append(Outcome(name, score, status, detail, round(time.perf_counter() - started, 2), variant))
    return outcomes


def score_direct(sample: EvalSample, metrics: RagMetrics) -> list[Outcome]:
    """Score one sample with the direct metrics, one judge call after the other."""
    if sample.error or not sample.contexts:
        why = sample.error or "no contexts to judge"
        return [Outcome(name, None, "error", why) for name in METRICS]
    q = sample.question
    reference, variant = (q.reference, "with reference") if q.reference else (sample.answer, "without reference")
    return [metrics.faithfulness(q.question, sample.answer, sample.contexts),
            metrics.answer_relevancy(q.question, sample.answer),
            metrics.context_precision(q.question, sample.contexts, reference, variant)]


def score(samples: Sequence[EvalSample], metrics: RagMetrics | dict[str, Any],
          progress: bool = True) -> list[SampleResult]:
    """Score every sample with the three metrics (sequentially, with a progress bar): direct, or ragas' own."""
    from tqdm import tqdm

    results = []
    for sample in tqdm(list(samples), desc="judging", unit="question", disable=not progress):
        if isinstance(metrics, RagMetrics):
            results.append(SampleResult(sample, score_direct(sample, metrics)))
        else:
            results.append(SampleResult(sample, run_coroutine(lambda s=sample: ascore_sample(s, metrics))))
    return results


def summary_rows(results: Sequence[SampleResult]) -> list[dict[str, object]]:
    """Per metric: the mean of the scores the judge produced, beside how many it could not produce and why."""
    rows = []
    for name in METRICS:
        outcomes = [o for r in results for o in r.outcomes if o.metric == name]
        scored = [o.score for o in outcomes if o.status == "ok" and o.score is not None]
        parse = sum(1 for o in outcomes if o.status == "parse_failure")
        errors = sum(1 for o in outcomes if o.status == "error")
        rows.append({
            "metric": name,
            "mean score": round(statistics.fmean(scored), 2) if scored else "no score",
            "scored": f"{len(scored)}/{len(outcomes)}",
            "judge parse failures": f"{parse}/{len(outcomes)}",
            "parse-failure rate": f"{parse / len(outcomes):.0%}" if outcomes else "-",
            "other errors": errors,
            "judge calls": sum(o.calls for o in outcomes),
            "judge seconds": round(sum(o.seconds for o in outcomes), 1),
        })
    return rows


def route_accuracy(samples: Sequence[EvalSample]) -> tuple[int, int]:
    """(right, asked) over the samples whose question names an expected route."""
    judged = [s for s in samples if s.question.expected_route and s.route]
    return sum(1 for s in judged if s.route == s.question.expected_route), len(judged)


# ---------------------------------------------------------------- Langfuse and saving


def send_to_langfuse(results: Sequence[SampleResult], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Attach every produced score to its agent trace in Langfuse; (scores sent, message). Needs LANGFUSE_* set."""
    from helpers.layers.observability import tracing

    if not tracing.langfuse_configured(env):
        return 0, ("Langfuse is not configured (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_HOST are not "
                   "all set): the scores were not sent; they are in the table above and the saved JSON.")
    from langfuse import get_client

    client = get_client()
    sent, no_trace = 0, 0
    for r in results:
        if not r.sample.trace_id:
            no_trace += 1
            continue
        for o in r.outcomes:
            if o.status == "ok" and o.score is not None:
                client.create_score(name=f"ragas_{o.metric}", value=float(o.score), trace_id=r.sample.trace_id,
                                    data_type="NUMERIC", comment=o.variant or None)
                sent += 1
            else:
                client.create_score(name=f"ragas_{o.metric}_failed", value=o.status, trace_id=r.sample.trace_id,
                                    data_type="CATEGORICAL", comment=o.detail[:200])
    client.flush()
    note = f" ({no_trace} answer(s) had no trace id)" if no_trace else ""
    return sent, f"sent {sent} score(s) to Langfuse{note}"


def save(results: Sequence[SampleResult], stamp: dict[str, Any] | None = None,
         directory: Path | str = RESULTS_DIR) -> Path:
    """Write samples, outcomes and the summary as JSON under build/evaluation/ (git-ignored); return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ragas-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    payload = {"stamp": stamp or {}, "definitions": DEFINITIONS, "summary": summary_rows(results),
               "results": [{"sample": asdict(r.sample), "outcomes": [asdict(o) for o in r.outcomes]}
                           for r in results]}
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def ensure_knowledge_base(t: Target, progress: bool = False) -> Any:
    """Index the knowledge base into the target's vector store if it is not already (idempotent; notebook 06's ingest)."""
    from helpers.layers.rag import knowledge

    store = t.vector_store()
    try:
        return knowledge.ingest(store, knowledge.Embedder(t.gateway_embeddings), progress=progress)
    finally:
        store.close()
