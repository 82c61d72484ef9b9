"""The relevance judge: RAGAs' context precision, asked directly of the gateway's chat route; ragas wired to it too.

Shared by the supervisor agent (notebook 08: relevance of retrieved chunks) and the evaluation (notebook 09).

    from helpers.layers.agent.judge import Judge, average_precision, ragas_llm, ragas_embeddings
    judge = Judge(t.gateway)                      # one verdict per chunk, ragas' prompt, a JSON-schema grammar
    v = judge.verdict(question, chunk_text, answer)   # Verdict(verdict=1, reason="", error=None, call=ModelCall)
    average_precision([v.verdict, ...])           # ragas' context precision of the verdicts, in rank order
    llm = ragas_llm(t.gateway)                    # ragas LangchainLLMWrapper on the gateway's `reasoning` route
    emb = ragas_embeddings(t.gateway_embeddings)  # ragas LangchainEmbeddingsWrapper on its `embedding` route

The agent's verdicts do not go through ragas' LangChain round trip: `Judge` sends ragas' own prompt text (its
instruction, output schema and three examples, kept as data in helpers/data/ragas_context_precision_prompt.txt and
checked equal to ragas 0.4.3's `ContextPrecisionPrompt` by tests/test_judge.py) as one user message, with
`response_format: {"type": "json_object", "schema": ...}` so the model server's grammar allows nothing but
`{"verdict": 0|1}` (a few tokens instead of ragas' 40-80-token reason), at temperature 0. The prompt starts with
the fixed instructions and ends with the question, chunk and answer, so the model server's prompt cache (longest
shared prefix) reads the 900-token instructions once. ragas' definition of the score is kept: average precision
over the verdicts in rank order (`average_precision`). A verdict that cannot be read (transport error, output cut
at the token cap) is a failure the caller counts, as before.

Three things about ragas 0.4.3 in this venv (see ../shared/NOTES.md), for notebook 09's evaluation:
- It phones home unless RAGAS_DO_NOT_TRACK=true, and tiktoken downloads its encodings at run time (fails
  offline). `prepare_environment()` (called by every ragas function here, before ragas is imported) sets the
  first and points TIKTOKEN_CACHE_DIR at the encodings litellm ships, unless you set either yourself.
- The lock file pins `instructor==0.4.0`, which has no `instructor.from_openai`: ragas' new
  `llm_factory(...)` and the `ragas.metrics.collections` metrics built on it fail here. The classic metrics
  (`ragas.metrics.LLMContextPrecisionWithoutReference`, `Faithfulness`, ...) work with the wrappers below.
- langchain-openai sends `max_completion_tokens`, which llama-cpp-python 0.3.36 ignores; the local model server
  (services/llama_server/server.py) maps it to `max_tokens`, so `ragas_llm(max_tokens=...)` caps the judge there too.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import ROOT
from helpers.target import Endpoint

JUDGE_MAX_TOKENS = 160  # ragas' judge (notebook 09): one JSON object {"reason": ..., "verdict": 0|1}
JUDGE_TIMEOUT = 180.0  # seconds per judge call (a busy 2-core machine needs them)
RAGAS_VERSION = "0.4.3"  # the ragas whose ContextPrecisionPrompt the prompt file equals (tests/test_judge.py)
PROMPT_FILE = ROOT / "helpers" / "data" / "ragas_context_precision_prompt.txt"
VERDICT_SCHEMA: dict[str, Any] = {  # what the grammar lets the model write: {"verdict": 0} or {"verdict": 1}
    "type": "object", "properties": {"verdict": {"type": "integer", "enum": [0, 1]}}, "required": ["verdict"]}
REASON_MAX_CHARS = 160


def reasoned_schema(max_chars: int = REASON_MAX_CHARS) -> dict[str, Any]:
    """ragas' output shape, reason first (capped at `max_chars`), then the verdict."""
    return {"type": "object", "properties": {"reason": {"type": "string", "maxLength": max_chars},
                                             "verdict": {"type": "integer", "enum": [0, 1]}},
            "required": ["reason", "verdict"]}


# ---------------------------------------------------------------- the prompt (ragas' words, as data)


@functools.cache
def prompt_prefix() -> str:
    """ragas' fixed instruction, output schema and examples: everything before the input (cached by the server)."""
    return PROMPT_FILE.read_text(encoding="utf-8")


def context_precision_prompt(question: str, context: str, answer: str) -> str:
    """The judge's prompt for one chunk, character for character what ragas' ContextPrecisionPrompt.to_string gives."""
    data = json.dumps({"question": question, "context": context, "answer": answer}, indent=4, ensure_ascii=False)
    return f"{prompt_prefix()}input: {data}\nOutput: "


# ---------------------------------------------------------------- one model call, measured


@dataclass
class ModelCall:
    """One model call of the agent: tokens (when the server reports them) and where its seconds went."""

    step: str  # draft | judge | answer | supervisor | ...
    seconds: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_s: float | None = None  # streamed calls: request to first token (queue + prompt prefill)
    decode_s: float | None = None  # streamed calls: first token to last (decode)
    tokens_from: str = "server"  # "server" (usage) or "chunks" (counted from a stream without usage)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready row (seconds rounded to ms)."""
        return {"step": self.step, "seconds": round(self.seconds, 3), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "first_token_s": None if self.first_token_s is None else round(self.first_token_s, 3),
                "decode_s": None if self.decode_s is None else round(self.decode_s, 3), "tokens_from": self.tokens_from}


@dataclass
class Verdict:
    """The judge's verdict on one context: 1 useful, 0 not, None when the judge's output could not be used."""

    verdict: int | None
    reason: str
    error: str | None = None
    call: ModelCall | None = field(default=None, repr=False)


def read_verdict(text: str) -> tuple[int | None, str, str | None]:
    """(verdict, reason, error) from the judge's reply text."""
    try:
        data = json.loads(text)
    except ValueError:
        return None, "", f"not JSON (cut at the token cap?): {text[:120]!r}"
    if not isinstance(data, dict) or data.get("verdict") not in (0, 1):
        return None, "", f"no verdict 0 or 1 in {text[:120]!r}"
    return int(data["verdict"]), str(data.get("reason") or ""), None


class Judge:
    """RAGAs context precision without reference, one chunk per call, straight to an OpenAI-compatible chat route."""

    def __init__(self, endpoint: Endpoint, reason_chars: int = 0, max_tokens: int | None = None,
                 timeout: float = JUDGE_TIMEOUT, client: Any = None, cache_hits: Any = None) -> None:
        from helpers.layers.observability import tracing

        self.endpoint = endpoint
        self.schema = reasoned_schema(reason_chars) if reason_chars else VERDICT_SCHEMA
        # {"verdict": 1} is 6-8 tokens; a reason of n characters is about n/4 more. The cap only stops a runaway
        # (e.g. a server that ignores the schema): a reply cut there is a parse failure, counted by the caller.
        self.max_tokens = max_tokens or (16 + reason_chars // 2)
        if client is None:
            http = tracing.http_client(timeout=timeout)
            if cache_hits is not None:  # steps.CacheHits: counts the verdicts the gateway's cache answered
                cache_hits.watch(http)
            client = endpoint.client(timeout=timeout, max_retries=1, http_client=http)
        self.client = client

    def request(self, question: str, context: str, answer: str) -> dict[str, Any]:
        """The chat-completion request for one verdict (what is sent; useful to show and to test)."""
        return {"model": self.endpoint.model, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": context_precision_prompt(question, context, answer)}],
                "response_format": {"type": "json_object", "schema": self.schema}}

    def verdict(self, question: str, context: str, answer: str) -> Verdict:
        """Was `context` useful in arriving at `answer`? One model call; failures come back as verdict None."""
        body = self.request(question, context, answer)
        started = time.perf_counter()
        call = ModelCall("judge")
        try:
            reply = self.client.chat.completions.create(**body)
        except Exception as exc:  # noqa: BLE001 - any judge failure is counted, reported and falls back
            call.seconds = time.perf_counter() - started
            return Verdict(None, "", f"{type(exc).__name__}: {str(exc)[:200]}", call)
        call.seconds = time.perf_counter() - started
        if reply.usage is not None:
            call.prompt_tokens, call.completion_tokens = reply.usage.prompt_tokens, reply.usage.completion_tokens
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        value, reason, error = read_verdict(text)
        return Verdict(value, reason, error, call)


def average_precision(verdicts: list[int]) -> float:
    """ragas' context precision from binary verdicts (rank-weighted: useful chunks near the top count more)."""
    if not verdicts:
        return math.nan
    numerator = sum((sum(verdicts[: i + 1]) / (i + 1)) * verdicts[i] for i in range(len(verdicts)))
    return numerator / (sum(verdicts) + 1e-10)


def exact_precision(known: list[int], unknown: int) -> float | None:
    """Context precision when the `unknown` verdicts still to come cannot change it, else None."""
    scores = {round(average_precision(known + list(rest)), 9) for rest in itertools.product((0, 1), repeat=unknown)}
    return scores.pop() if len(scores) == 1 else None


def score_chunks(judge: Judge, question: str, hits: list[Any], texts: list[str], answer: str, config: Any,
                 calls: list[ModelCall] | None = None) -> dict[str, Any]:
    """The relevance of ranked chunks for an answer: a verdict per chunk, ragas' average precision of them.

    Chunks below `config.similarity_floor` are unrelated to the question: code marks them 0 without asking the
    judge (a 0.5B judge says "1" to such chunks now and then, and each verdict costs seconds). The judge is asked
    in rank order and stops as soon as the remaining verdicts cannot change the score (with two chunks: a useful
    first chunk makes it 1.0 whatever the second). A verdict the judge fails to give falls back to the chunk's
    similarity against `config.similarity_useful`, and is counted. `texts[i]` is chunk i as the writer read it."""
    if not hits:
        return {"score": 0.0, "method": "floor", "judge_failures": 0, "threshold": config.threshold,
                "verdicts": [], "top_similarity": None, "note": "the knowledge base returned nothing"}
    rows, used, failures, errors, asked = [], [], 0, [], 0
    for i, hit in enumerate(hits):
        if exact_precision(used, len(hits) - i) is not None:
            rows.append({"source": hit.source, "similarity": round(hit.score, 3), "verdict": None,
                         "by": "not needed", "reason": "the chunks above already fix the score"})
            continue
        if hit.score < config.similarity_floor:
            value, by, reason = 0, "floor", f"similarity {hit.score:.3f} < {config.similarity_floor}"
        else:
            asked += 1
            v = judge.verdict(question, texts[i], answer)
            if calls is not None and v.call is not None:
                calls.append(v.call)
            if v.verdict is None:
                failures += 1
                errors.append(v.error or "")
                value, by, reason = int(hit.score >= config.similarity_useful), "embedding", v.error or ""
            else:
                value, by, reason = v.verdict, "judge", v.reason
        used.append(value)
        rows.append({"source": hit.source, "similarity": round(hit.score, 3), "verdict": value, "by": by,
                     "reason": reason[:300]})
    score = exact_precision(used, len(hits) - len(used))
    # floor: no chunk was similar enough to ask about; embedding: every verdict asked for failed (similarity decided)
    method = "floor" if asked == 0 else "embedding" if failures == asked else "ragas" if failures == 0 \
        else "ragas+embedding"
    return {"score": round(score if score is not None else average_precision(used), 3), "method": method,
            "judge_failures": failures, "judged": asked, "threshold": config.threshold, "verdicts": rows,
            "top_similarity": round(hits[0].score, 3), "judge_errors": errors}


# ---------------------------------------------------------------- ragas itself (notebook 09's evaluation)


def prepare_environment() -> dict[str, str]:
    """Set RAGAS_DO_NOT_TRACK and an offline TIKTOKEN_CACHE_DIR (only where unset); return what is in effect."""
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    warnings.filterwarnings("ignore", message="IProgress not found")  # ragas imports tqdm.auto; harmless here
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        import importlib.util

        # litellm ships the cl100k/o200k files under their tiktoken cache names; it lives in the gateway's venv
        # (.venvs/litellm, notebook 04) and sometimes in this one
        spec = importlib.util.find_spec("litellm")  # located, not imported (importing litellm is slow)
        candidates = [Path(spec.origin).parent] if spec and spec.origin else []
        candidates += sorted((ROOT / ".venvs" / "litellm" / "lib").glob("python3*/site-packages/litellm"))
        for package in candidates:
            folder = package / "litellm_core_utils" / "tokenizers"
            if folder.is_dir():
                os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
                break
    return {k: os.environ.get(k, "") for k in ("RAGAS_DO_NOT_TRACK", "TIKTOKEN_CACHE_DIR")}


def ragas_llm(endpoint: Endpoint, max_tokens: int = JUDGE_MAX_TOKENS, timeout: float = JUDGE_TIMEOUT) -> Any:
    """A ragas LLM (LangchainLLMWrapper over ChatOpenAI) on an OpenAI-compatible chat endpoint, temperature 0.

    Its requests carry the caller's W3C traceparent (both LangChain clients get the tracing hook). The evaluation
    passes the target's gateway (`t.gateway`); tests may pass the model server."""
    prepare_environment()
    from langchain_openai import ChatOpenAI
    from ragas.llms import LangchainLLMWrapper
    from ragas.run_config import RunConfig

    from helpers.layers.observability import tracing

    chat = ChatOpenAI(model=endpoint.model, base_url=endpoint.base_url, api_key=endpoint.key() or "none",
                      temperature=0, max_tokens=max_tokens, timeout=timeout, max_retries=1,
                      http_client=tracing.http_client(timeout=timeout),
                      http_async_client=tracing.async_http_client(timeout=timeout))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LangchainLLMWrapper(chat, run_config=RunConfig(timeout=int(timeout), max_retries=1))


def ragas_embeddings(endpoint: Endpoint) -> Any:
    """ragas embeddings (LangchainEmbeddingsWrapper over OpenAIEmbeddings) on an embedding endpoint (`t.gateway_embeddings`)."""
    prepare_environment()
    from langchain_openai import OpenAIEmbeddings
    from ragas.embeddings import LangchainEmbeddingsWrapper

    # check_embedding_ctx_length=False: send text, not tiktoken ids (the served model has its own tokenizer)
    emb = OpenAIEmbeddings(model=endpoint.model, base_url=endpoint.base_url, api_key=endpoint.key() or "none",
                           check_embedding_ctx_length=False, max_retries=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LangchainEmbeddingsWrapper(emb)


def context_precision_metric(llm: Any) -> Any:
    """ragas' LLMContextPrecisionWithoutReference bound to a judge LLM (see ragas_llm): notebook 09's metric."""
    prepare_environment()
    from ragas.metrics import LLMContextPrecisionWithoutReference

    return LLMContextPrecisionWithoutReference(llm=llm)
