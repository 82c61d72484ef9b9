"""The supervisor agent (notebook 08): knowledge base first, RAGAs relevance decides, web search otherwise.

    from helpers.layers.agent.supervisor import build_supervisor
    sup = build_supervisor(t)          # t: the notebook's Target (workshop.setup)
    a = sup.ask("Why is my GPU pod stuck in Pending?")
    a.route, a.sources, a.relevance, a.timings

A control flow a 0.5B model can follow. The local chat model (Qwen2.5-Coder 0.5B) writes tool calls badly and
repeats calls after tool results, so the model is never asked to choose a tool or a route:

| step | who decides | how |
|---|---|---|
| search the knowledge base | code | always, top `k` chunks (Milvus Lite locally, OpenSearch on EKS) |
| a chunk below the similarity floor | code | verdict 0 without asking the judge (`similarity_floor`) |
| draft an answer from the chunks (if any passed the floor) | the chat model | a Strands `Agent` with no tools |
| was each chunk useful for that answer? | the judge model | RAGAs context precision without reference, one verdict per chunk, in rank order; stops once the rest cannot change the score |
| a verdict the judge failed to give | code | the chunk's cosine similarity against `similarity_useful` |
| route: knowledge base or web search | code | relevance score >= `threshold`; the draft is the answer when it is relevant |
| call the web-search MCP tool | code | Strands direct tool call `agent.tool.web_search(...)` through `MCPClient` |
| write the answer from the web results, with [n] citations | the chat model | the same `Agent` |
| save the answer (when asked) | code | Strands direct tool call `agent.tool.write_file(...)` (filesystem MCP) |
| the source list under the answer | code | a "Sources: [1] ..." line from the chunks/results the answer was written from |

Why draft first: RAGAs context precision without reference asks "was this context useful in arriving at the given
answer?". Given the real answer, the 0.5B judge mostly gets it right; given the question in the answer's place, it
called most useful chunks useless (5 of 10 knowledge-base questions went to the web). Drafting costs nothing on the
knowledge-base route (the draft is the answer) and one extra answer when the judge rejects the chunks.

With a bigger model (Qwen3-14B on EKS) the same code works unchanged; only the answers get better.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from helpers.errors import WorkshopError
from helpers.layers.agent.questions import QUESTIONS_FILE, load_questions  # noqa: F401 - part of the agent API
from helpers.target import Endpoint, Target

Route = Literal["knowledge_base", "web_search"]
MAX_QUESTION_CHARS = 2000  # longer questions are refused (the API answers 422)
SYSTEM_PROMPT = (
    "You answer questions for engineers. Use only the numbered sources you are given. "
    "Cite the sources you use like [1] or [2]. If the sources do not answer the question, say so. "
    "Answer in at most four sentences."
)
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
    route: Route
    sources: list[dict]  # {"id", "title", "source", "score"}
    contexts: list[str]  # the chunk/result texts the answer was written from
    relevance: dict  # {"score", "method", "judge_failures", "threshold", "verdicts", ...}
    timings: dict[str, float]  # seconds per step + "total"
    trace_id: str | None
    saved: dict | None = None  # {"path", "bytes"} when the answer was saved through the filesystem MCP server

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class SupervisorConfig:
    """The knobs of the supervisor (defaults measured on the local stack, notebook 08)."""

    k: int = 2  # chunks retrieved from the knowledge base; the answer is written from them
    judge_k: int = 2  # of those, how many the RAGAs judge scores (each verdict is one model call)
    threshold: float = 0.5  # relevance score at or above which the knowledge base answers
    similarity_floor: float = 0.30  # chunks less similar than this are not relevant; the judge is not asked
    similarity_useful: float = 0.40  # fallback when the judge fails: a chunk this similar counts as useful
    answer_max_tokens: int = 128
    answer_context_chars: int = 800  # characters of each source the writer (and so the judge) reads
    web_results: int = 3


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


def source_text(text: str, max_chars: int) -> str:
    """A source as the writer reads it: whitespace collapsed, cut at `max_chars` (the judge reads the same)."""
    return " ".join(text.split())[:max_chars]


def answer_prompt(question: str, contexts: list[str], titles: list[str], max_chars: int) -> str:
    """The user message the chat model answers: numbered sources, then the question."""
    blocks = [f"[{i}] {title}\n{source_text(text, max_chars)}"
              for i, (title, text) in enumerate(zip(titles, contexts), start=1)]
    return "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer (cite sources like [1]):"


def exact_precision(known: list[int], unknown: int) -> float | None:
    """Context precision when the `unknown` verdicts still to come cannot change it, else None."""
    from helpers.layers.agent.judge import average_precision

    scores = {round(average_precision(known + list(rest)), 9) for rest in itertools.product((0, 1), repeat=unknown)}
    return scores.pop() if len(scores) == 1 else None


def citation_line(sources: list[dict[str, Any]]) -> str:
    """The sources an answer was written from, numbered as in its prompt (code adds it: small models forget)."""
    return "Sources: " + "; ".join(f"[{i}] {s['title']} ({s['source']})" for i, s in enumerate(sources, start=1))


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("llm-eks-workshop")


def _trace_id(span: Any) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _strip_think(text: str) -> str:
    """Remove a <think>...</think> block (Qwen3 in thinking mode) from an answer."""
    return re.sub(r"<think>.*?</think>", "", text, flags=re.S).strip()


class Supervisor:
    """Retrieve -> judge relevance (RAGAs) -> route (code) -> answer (model) -> optionally save (MCP)."""

    def __init__(self, t: Target, config: SupervisorConfig | None = None, store: Any = None,
                 gateway: Endpoint | None = None) -> None:
        from helpers.layers.rag import knowledge

        self.target = t
        self.settings = t.settings
        self.config = config or SupervisorConfig()
        # chat, judge and embeddings all go through the gateway (one URL, one key); tests may pass another endpoint
        self.gateway = gateway or t.gateway
        self.web_search_url = t.mcp_url("web-search")
        self.filesystem_url = t.mcp_url("filesystem")
        self.embedder = knowledge.Embedder(replace(self.gateway, model=self.settings.served_embedding_model),
                                           max_retries=1)
        self._store = store
        self._metric: Any = None
        self._model: Any = None
        self._tool_agents: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ parts, built on first use

    @property
    def store(self) -> Any:
        """The knowledge-base vector store of the target (Milvus Lite here, Amazon OpenSearch on EKS)."""
        if self._store is None:
            from helpers.errors import WorkshopError

            try:
                self._store = self.target.vector_store()
            except WorkshopError as exc:
                raise AgentError("vector-store", exc.message, exc.fix) from None
        return self._store

    def _judge_metric(self) -> Any:
        if self._metric is None:
            from helpers.layers.agent import judge

            llm = judge.ragas_llm(self.gateway)
            self._metric = judge.context_precision_metric(llm)
        return self._metric

    def _chat_model(self) -> Any:
        if self._model is None:
            from strands.models.openai import OpenAIModel

            self._model = OpenAIModel(
                client_args={"base_url": self.gateway.base_url, "api_key": self.gateway.key(), "max_retries": 1,
                             "timeout": 600},
                model_id=self.gateway.model,
                params={"temperature": 0, "max_tokens": self.config.answer_max_tokens},
                # one non-streamed reply: the API returns whole answers, and llama-cpp-python's server (0.3.36)
                # drops streams that ask for usage (stream_options), which Strands sends when streaming
                stream=False,
            )
        return self._model

    def _tools(self, dependency: str) -> Any:
        """A Strands agent holding one MCP server's tools; code calls them directly (agent.tool.<name>).

        One agent per server, so a server that is down affects only its own tools."""
        if dependency not in self._tool_agents:
            from strands import Agent
            from strands.tools.mcp import MCPClient

            url = {"mcp-web-search": self.web_search_url, "mcp-filesystem": self.filesystem_url}[dependency]
            self._tool_agents[dependency] = Agent(model=self._chat_model(), tools=[MCPClient(url=url)],
                                                  callback_handler=None, name=f"supervisor-{dependency}")
        return self._tool_agents[dependency]

    # ------------------------------------------------------------ steps

    def retrieve(self, question: str) -> list[Any]:
        """The top-k chunks for the question (embedding through the gateway, search in the store)."""
        from helpers.layers.rag.knowledge import EmbeddingError, search
        from helpers.layers.rag.stores import VectorStoreError

        store = self.store
        try:
            return search(store, self.embedder, question, k=self.config.k)
        except EmbeddingError as exc:
            raise AgentError("gateway", f"embedding the question failed: {exc}") from None
        except VectorStoreError as exc:
            raise AgentError("vector-store", str(exc)) from None

    def candidates(self, hits: list[Any]) -> list[Any]:
        """The chunks the judge would be asked about: the top `judge_k` at or above the similarity floor."""
        return [h for h in hits[: self.config.judge_k] if h.score >= self.config.similarity_floor]

    def relevance(self, question: str, hits: list[Any], answer: str | None = None) -> dict[str, Any]:
        """RAGAs context precision (without reference) of the top chunks for `answer`, with an embedding fallback."""
        from helpers.layers.agent import judge

        judged = hits[: self.config.judge_k]
        if not judged:
            return {"score": 0.0, "method": "embedding", "judge_failures": 0, "threshold": self.config.threshold,
                    "verdicts": [], "top_similarity": None, "note": "the knowledge base returned nothing"}
        # Chunks below the similarity floor are unrelated to the question; code marks them 0 without asking the
        # judge (a 0.5B judge says "1" to such chunks now and then, and each verdict costs seconds). The judge
        # is asked in rank order and stops as soon as the remaining verdicts cannot change the score (with two
        # chunks: a useful first chunk makes the score 1.0 whatever the second).
        rows, used, failures, errors, asked = [], [], 0, [], 0
        for i, hit in enumerate(judged):
            if exact_precision(used, len(judged) - i) is not None:
                rows.append({"source": hit.source, "similarity": round(hit.score, 3), "verdict": None,
                             "by": "not needed", "reason": "the chunks above already fix the score"})
                continue
            if hit.score < self.config.similarity_floor:
                value, by, reason = 0, "floor", f"similarity {hit.score:.3f} < {self.config.similarity_floor}"
            else:
                asked += 1
                context = source_text(hit.text, self.config.answer_context_chars)
                v = judge.judge_verdicts(self._judge_metric(), question, [context], answer or question)[0]
                if v.verdict is None:
                    failures += 1
                    errors.append(v.error or "")
                    value, by, reason = int(hit.score >= self.config.similarity_useful), "embedding", v.error or ""
                else:
                    value, by, reason = v.verdict, "judge", v.reason
            used.append(value)
            rows.append({"source": hit.source, "similarity": round(hit.score, 3), "verdict": value, "by": by,
                         "reason": reason[:300]})
        score = exact_precision(used, len(judged) - len(used))
        method = ("embedding" if asked == 0 or failures == asked else "ragas" if failures == 0 else "ragas+embedding")
        return {"score": round(score if score is not None else judge.average_precision(used), 3), "method": method,
                "judge_failures": failures, "judged": asked, "threshold": self.config.threshold, "verdicts": rows,
                "top_similarity": round(hits[0].score, 3), "judge_errors": errors}

    def web_search(self, question: str) -> list[dict[str, Any]]:
        """Results of the web-search MCP tool (Tavily, or the offline stand-in), best first."""
        result = self._call_tool("mcp-web-search", "web_search",
                                 {"query": question[:400], "max_results": self.config.web_results})
        data = result.get("structuredContent") or {}
        if "results" not in data:  # some servers only return text content
            try:
                data = json.loads(result["content"][0]["text"])
            except (KeyError, IndexError, ValueError):
                raise AgentError("mcp-web-search", f"unexpected tool result: {str(result)[:200]}") from None
        return list(data.get("results") or [])

    def save(self, path: str, answer: AgentAnswer) -> dict[str, Any]:
        """Write the answer (Markdown, with its sources) into the workspace through the filesystem MCP server."""
        text = f"# {answer.question}\n\n{answer.answer}\n\nRoute: {answer.route}\n"  # the answer ends with its sources
        self._call_tool("mcp-filesystem", "write_file", {"path": path, "content": text})
        return {"path": path, "bytes": len(text.encode())}

    def _call_tool(self, dependency: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            try:
                agent = self._tools(dependency)
                result = getattr(agent.tool, name)(record_direct_tool_call=False, **arguments)
            except AgentError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the MCP connection names its server
                self._drop_tools(dependency)  # reconnect next time
                raise AgentError(dependency, f"calling {name} failed: {type(exc).__name__}: {exc}") from None
        if result.get("status") != "success":
            text = " ".join(c.get("text", "") for c in result.get("content", []))
            self._drop_tools(dependency)  # a broken connection also shows up as an error result: reconnect next time
            raise AgentError(dependency, f"{name} returned an error: {text[:300]}")
        return result

    def write_answer(self, question: str, contexts: list[str], titles: list[str]) -> str:
        """The chat model writes the answer from the given sources only (a Strands Agent with no tools)."""
        from strands import Agent

        writer = Agent(model=self._chat_model(), system_prompt=SYSTEM_PROMPT, tools=[], callback_handler=None,
                       name="supervisor-writer")
        prompt = answer_prompt(question, contexts, titles, self.config.answer_context_chars)
        from strands.types.exceptions import MaxTokensReachedException

        try:
            result = writer(prompt)
        except MaxTokensReachedException:  # the model answered, at length: keep what it wrote, say it was cut
            partial = " ".join(block.get("text", "") for block in writer.messages[-1].get("content", []))
            return _strip_think(partial).rstrip() + " … (cut short at the answer's token limit)"
        except Exception as exc:  # noqa: BLE001 - the model call failed: name the gateway
            raise AgentError("gateway", f"the chat model call failed: {type(exc).__name__}: {str(exc)[:300]}") from None
        return _strip_think(str(result))

    # ------------------------------------------------------------ the whole thing

    def ask(self, question: str, save_as: str | None = None) -> AgentAnswer:
        """Answer one question: knowledge base if the retrieved chunks are relevant, else web search."""
        question = check_question(question)
        question, asked_path = parse_save_request(question)
        question = check_question(question)
        save_as = save_as or asked_path
        timings: dict[str, float] = {}
        tracer = _tracer()
        started = time.perf_counter()

        def step(name: str) -> Any:
            class _Step:
                def __enter__(self) -> Any:
                    self.t = time.perf_counter()
                    self.span = tracer.start_as_current_span(f"agent.{name}")
                    return self.span.__enter__()

                def __exit__(self, *exc: Any) -> None:
                    self.span.__exit__(*exc)
                    timings[name] = round(time.perf_counter() - self.t, 3)

            return _Step()

        with tracer.start_as_current_span("agent.ask", attributes={"agent.question": question[:200]}) as root:
            trace_id = _trace_id(root)
            with step("retrieve"):
                hits = self.retrieve(question)
            draft = None
            if self.candidates(hits):  # something passed the floor: draft the knowledge-base answer, then judge it
                with step("draft"):
                    draft = self.write_answer(question, [h.text for h in hits], [h.title for h in hits])
            with step("judge"):
                relevance = self.relevance(question, hits, draft)
            route: Route = "knowledge_base" if relevance["score"] >= self.config.threshold else "web_search"
            root.set_attribute("agent.route", route)
            root.set_attribute("agent.relevance", float(relevance["score"]))
            if route == "knowledge_base":
                contexts = [source_text(h.text, self.config.answer_context_chars) for h in hits]  # as written from
                sources = [{"id": h.id, "title": h.title, "source": h.source, "score": round(h.score, 3)}
                           for h in hits]
                text = (draft or "") + "\n\n" + citation_line(sources)
            else:
                with step("web_search"):
                    results = self.web_search(question)
                contexts = [r.get("content", "") for r in results]
                titles = [r.get("title", "") for r in results]
                sources = [{"id": r.get("url", ""), "title": r.get("title", ""), "source": r.get("url", ""),
                            "score": round(float(r.get("score", 0.0)), 3)} for r in results]
                with step("answer"):
                    if contexts:
                        text = self.write_answer(question, contexts, titles) + "\n\n" + citation_line(sources)
                    else:
                        text = ("I found nothing to answer from: the knowledge base and the web search came back "
                                "empty.")
            answer = AgentAnswer(question=question, answer=text, route=route, sources=sources, contexts=contexts,
                                 relevance=relevance, timings=timings, trace_id=trace_id)
            if save_as:
                with step("save"):
                    answer.saved = self.save(save_as, answer)
        timings["total"] = round(time.perf_counter() - started, 3)
        return answer

    def close(self) -> None:
        """Release the vector store (Milvus Lite lets one process open it at a time) and the MCP connections."""
        if self._store is not None:
            try:
                self._store.close()
            finally:
                self._store = None
        for dependency in list(self._tool_agents):
            self._drop_tools(dependency)

    def _drop_tools(self, dependency: str) -> None:
        agent = self._tool_agents.pop(dependency, None)
        if agent is not None:
            try:
                agent.cleanup()  # stops the agent's MCP client (its background thread and session)
            except Exception:  # noqa: BLE001 - best effort: the connection may already be broken
                pass


def build_supervisor(t: Target, **kwargs: Any) -> Supervisor:
    """A Supervisor on the target's gateway, knowledge base and MCP servers (kwargs: config=, store=, gateway=)."""
    return Supervisor(t, **kwargs)


__all__ = ["AgentAnswer", "AgentError", "Supervisor", "SupervisorConfig", "build_supervisor", "check_question",
           "parse_save_request", "load_questions", "MAX_QUESTION_CHARS"]
