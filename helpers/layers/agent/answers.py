"""What the agent's answer is, in both routing modes: AgentAnswer, AgentError, the checks a question passes, and the
sources an answer cites (the supervisor, the model-routed supervisor and the API share them)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from helpers.errors import WorkshopError

Route = Literal["knowledge_base", "web_search"]
Routing = Literal["code", "model"]
ROUTINGS = ("code", "model")
MAX_QUESTION_CHARS = 2000  # longer questions are refused (the API answers 422)
_SAVE_REQUEST = re.compile(
    r"[\s,;.]*(?:and\s+)?save\s+(?:it|this|that|the\s+answer)?\s*(?:to|as|in)\s+(?P<path>[\w./-]+\.(?:md|txt))\s*\.?\s*$",
    re.I,
)


class AgentError(WorkshopError):
    """The agent could not answer; `dependency` names the part that failed (gateway, vector-store, mcp-...)."""

    def __init__(self, dependency: str, message: str, fix: str | None = None) -> None:
        super().__init__(message, fix)
        self.dependency = dependency

    def __str__(self) -> str:
        return f"{self.dependency}: {super().__str__()}"


@dataclass
class AgentAnswer:
    """What the supervisor returns for one question."""

    question: str
    answer: str
    route: Route | Literal["none"]
    sources: list[dict]  # {"id", "title", "source", "score"}
    contexts: list[str]  # the chunk/result texts the answer was written from, as the writer read them (source_text)
    relevance: dict  # {"score", "method", "judge_failures", "threshold", "verdicts", ...}
    timings: dict[str, float]  # seconds per step + "total"
    trace_id: str | None
    saved: dict | None = None  # {"path", "bytes"} when the answer was saved through the filesystem MCP server
    steps: list[dict] = field(default_factory=list)  # one row per model call: tokens, first token, decode (ModelCall)
    first_token_s: float | None = None  # seconds from the question to the first streamed answer token
    routing: Routing = "code"  # who routed: code, or the model (agents as tools)
    tools: list[str] = field(default_factory=list)  # model routing: the sub-agents and tools it called, in order
    cache_hits: int = 0  # model calls the gateway answered from its response cache (their time is a cache look-up)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """What the agent API returns (no question echo, no context texts)."""
        out = self.as_dict()
        out.pop("question", None)
        out.pop("contexts", None)
        return out


def parse_save_request(question: str) -> tuple[str, str | None]:
    """Split "..., and save it to notes/x.md" into the question and the path (code decides, not the model)."""
    match = _SAVE_REQUEST.search(question)
    if not match:
        return question, None
    return question[: match.start()].strip(), match.group("path")


def check_question(question: Any) -> str:
    """The question stripped, or ValueError saying what a valid question is."""
    if not isinstance(question, str):
        raise ValueError(f"the question must be a string, not {type(question).__name__}")
    question = question.strip()
    if not question:
        raise ValueError("the question is empty: ask something, e.g. 'Why is my GPU pod stuck in Pending?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    return question


def check_routing(routing: Any) -> Routing:
    """"code" or "model", or ValueError."""
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be 'code' or 'model', not {routing!r}")
    return routing


def source_text(text: str, max_chars: int) -> str:
    """A source as the writer reads it: whitespace collapsed, cut at `max_chars` (the judge reads the same)."""
    return " ".join(text.split())[:max_chars]


def citation_line(sources: list[dict[str, Any]]) -> str:
    """The sources an answer was written from, numbered as in its prompt (code adds it: small models forget)."""
    return "Sources: " + "; ".join(f"[{i}] {s['title']} ({s['source']})" for i, s in enumerate(sources, start=1))


def hit_source(hit: Any) -> dict[str, Any]:
    """A knowledge-base chunk as a source row."""
    return {"id": hit.id, "title": hit.title, "source": hit.source, "score": round(hit.score, 3)}


def web_source(result: dict[str, Any]) -> dict[str, Any]:
    """A web-search result as a source row."""
    return {"id": result.get("url", ""), "title": result.get("title", ""), "source": result.get("url", ""),
            "score": round(float(result.get("score", 0.0)), 3)}
