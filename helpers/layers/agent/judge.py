"""RAGAs wired to the workshop's gateway: the judge LLM (`reasoning` route) and embeddings (`embedding` route).

Shared by the supervisor agent (notebook 08: relevance of retrieved chunks) and the evaluation (notebook 09).

    from helpers.layers.agent.judge import ragas_llm, ragas_embeddings
    llm = ragas_llm(t.gateway)                  # ragas LangchainLLMWrapper on the gateway's `reasoning` route
    emb = ragas_embeddings(t.gateway_embeddings)  # ragas LangchainEmbeddingsWrapper on its `embedding` route

Three things about ragas 0.4.3 in this venv (see ../shared/NOTES.md):
- It phones home unless RAGAS_DO_NOT_TRACK=true, and tiktoken downloads its encodings at run time (fails
  offline). `prepare_environment()` (called by every function here, before ragas is imported) sets the first
  and points TIKTOKEN_CACHE_DIR at the encodings litellm ships, unless you set either yourself.
- The lock file pins `instructor==0.4.0`, which has no `instructor.from_openai`: ragas' new
  `llm_factory(...)` and the `ragas.metrics.collections` metrics built on it fail here. The classic metrics
  (`ragas.metrics.LLMContextPrecisionWithoutReference`, `Faithfulness`, ...) work with the wrappers below.
- A small judge often writes output ragas cannot parse. `judge_verdict` asks for one verdict with no
  "fix the format" retry and returns None when the judge failed, so the caller can count failures and fall
  back to something honest instead of a NaN.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.coroutines import run_coroutine
from helpers.target import Endpoint

JUDGE_MAX_TOKENS = 160  # one JSON object {"reason": ..., "verdict": 0|1}; the cap stops a rambling judge
JUDGE_TIMEOUT = 180.0  # seconds per judge call (a busy 2-core machine needs them)


def prepare_environment() -> dict[str, str]:
    """Set RAGAS_DO_NOT_TRACK and an offline TIKTOKEN_CACHE_DIR (only where unset); return what is in effect."""
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    warnings.filterwarnings("ignore", message="IProgress not found")  # ragas imports tqdm.auto; harmless here
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        import importlib.util

        from helpers.config import ROOT

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

    The agent and the evaluation pass the target's gateway (`t.gateway`); tests may pass the model server."""
    prepare_environment()
    from langchain_openai import ChatOpenAI
    from ragas.llms import LangchainLLMWrapper
    from ragas.run_config import RunConfig

    chat = ChatOpenAI(model=endpoint.model, base_url=endpoint.base_url, api_key=endpoint.key() or "none", temperature=0, max_tokens=max_tokens, timeout=timeout,
                      max_retries=1)
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


@dataclass
class Verdict:
    """The judge's verdict on one context: 1 useful, 0 not, None when the judge's output could not be used."""

    verdict: int | None
    reason: str
    error: str | None = None


def context_precision_metric(llm: Any) -> Any:
    """ragas' LLMContextPrecisionWithoutReference bound to the judge LLM (see ragas_llm)."""
    prepare_environment()
    from ragas.metrics import LLMContextPrecisionWithoutReference

    return LLMContextPrecisionWithoutReference(llm=llm)


async def ajudge_verdict(metric: Any, question: str, context: str, answer: str) -> Verdict:
    """Ask the judge whether one context is useful for the answer, once (no format-fixing retry)."""
    from ragas.metrics._context_precision import QAC

    try:
        outputs = await metric.context_precision_prompt.generate_multiple(
            data=QAC(question=question, context=context, answer=answer), llm=metric.llm, retries_left=0)
    except Exception as exc:  # noqa: BLE001 - any judge failure is counted, reported and falls back
        return Verdict(None, "", f"{type(exc).__name__}: {str(exc)[:200]}")
    if not outputs:
        return Verdict(None, "", "the judge returned nothing")
    out = outputs[0]
    if out.verdict not in (0, 1):
        return Verdict(None, out.reason, f"verdict {out.verdict!r} is not 0 or 1")
    return Verdict(int(out.verdict), out.reason)


def judge_verdicts(metric: Any, question: str, contexts: list[str], answer: str | None = None) -> list[Verdict]:
    """One verdict per context (sequential: the local model server answers one request at a time)."""
    answer = answer or question

    async def run() -> list[Verdict]:
        return [await ajudge_verdict(metric, question, c, answer) for c in contexts]

    return run_coroutine(run)




def average_precision(verdicts: list[int]) -> float:
    """ragas' context precision from binary verdicts (rank-weighted: useful chunks near the top count more)."""
    if not verdicts:
        return math.nan
    numerator = sum((sum(verdicts[: i + 1]) / (i + 1)) * verdicts[i] for i in range(len(verdicts)))
    return numerator / (sum(verdicts) + 1e-10)
