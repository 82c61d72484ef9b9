"""The supervisor agent (notebook 08): knowledge base first, RAGAs relevance decides, web search otherwise.

    from helpers.layers.agent.supervisor import build_supervisor
    sup = build_supervisor(t)          # t: the notebook's Target (workshop.setup)
    a = sup.ask("Why is my GPU pod stuck in Pending?")
    a.route, a.sources, a.relevance, a.timings, a.steps, a.first_token_s
    for event in sup.ask_stream("..."): ...     # route, sources, draft/token text, relevance, final (streaming.py)
    sup.ask("...", routing="model")             # a Strands supervisor whose tools are sub-agents (model_routing.py)

Two ways to route. `routing="code"` (the default locally) is a control flow a 0.5B model can follow: the local chat
model (Qwen2.5-Coder 0.5B) writes tool calls badly and repeats calls after tool results, so it never chooses:

| step | who decides | how |
|---|---|---|
| search the knowledge base | code | always, top `k` chunks (Milvus Lite locally, OpenSearch on EKS) |
| a chunk below the similarity floor | code | verdict 0 without asking the judge (`similarity_floor`) |
| draft an answer from the chunks that passed the floor | the chat model | a Strands `Agent` with no tools, streamed |
| was each chunk useful for that answer? | the judge model | RAGAs context precision without reference (judge.py), |
| | | one verdict per chunk, in rank order; stops once the rest cannot change the score |
| a verdict the judge failed to give | code | the chunk's cosine similarity against `similarity_useful` |
| route: knowledge base or web search | code | relevance score >= `threshold`; the draft is the answer when it is relevant |
| call the web-search MCP tool | code | Strands direct tool call `agent.tool.web_search(...)` through `MCPClient` |
| write the answer from the web results, with [n] citations | the chat model | the same writer, streamed |
| save the answer (when asked) | code | Strands direct tool call `agent.tool.write_file(...)` (filesystem MCP) |
| the source list under the answer | code | a "Sources: [1] ..." line from the chunks/results the answer was written from |

Why draft first: RAGAs context precision without reference asks "was this context useful in arriving at the given
answer?". Given the real answer, the 0.5B judge mostly gets it right; given the question in the answer's place, it
called most useful chunks useless. Drafting costs nothing on the knowledge-base route (the draft is the answer).
`routing="model"` (the default on EKS, where the model is Qwen3-14B) lets the model route: model_routing.py.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from typing import Any

from helpers.errors import WorkshopError
from helpers.layers.agent import chat
from helpers.layers.agent.answers import (  # noqa: F401 - re-exported: the agent's API
    MAX_QUESTION_CHARS, ROUTINGS, AgentAnswer, AgentError, Routing, check_question, check_routing, citation_line,
    hit_source, parse_save_request, source_text, web_source)
from helpers.layers.agent.judge import exact_precision  # noqa: F401 - part of the agent API
from helpers.layers.agent.questions import QUESTIONS_FILE, load_questions  # noqa: F401 - part of the agent API
from helpers.layers.agent.steps import AskRun, CacheHits, trace_id, tracer
from helpers.layers.agent.streaming import Cancelled, EventStream, stream_events
from helpers.layers.gateway.timing import NO_CACHE
from helpers.target import Endpoint, Target

SYSTEM_PROMPT = (
    "You answer questions for engineers. Use only the numbered sources you are given. "
    "Cite the sources you use like [1] or [2]. If the sources do not answer the question, say so. "
    "Answer in at most four sentences."
)


@dataclass
class SupervisorConfig:
    """The knobs of the supervisor (defaults measured on the local stack, notebook 08)."""

    k: int = 2  # chunks retrieved from the knowledge base; the answer is written from those above the floor
    judge_k: int = 2  # of those, how many the RAGAs judge scores (each verdict is one model call)
    threshold: float = 0.5  # relevance score at or above which the knowledge base answers
    similarity_floor: float = 0.30  # chunks less similar than this are not relevant; the judge is not asked
    similarity_useful: float = 0.40  # fallback when the judge fails: a chunk this similar counts as useful
    answer_max_tokens: int = 128
    answer_context_chars: int = 800  # characters of each source the writer (and so the judge) reads
    judge_reason_chars: int = 0  # 0: the judge writes {"verdict": 0|1} only; n: a reason of at most n chars first
    web_results: int = 3
    routing: Routing | None = None  # None: "model" on eks, "code" locally
    auto_ingest: bool = True  # an empty knowledge base is indexed from the bundled documents on first use (idempotent)


def answer_prompt(question: str, texts: list[str], titles: list[str]) -> str:
    """The user message the chat model answers: numbered sources (already cut, see source_text), then the question."""
    blocks = [f"[{i}] {title}\n{text}" for i, (title, text) in enumerate(zip(titles, texts), start=1)]
    return "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer (cite sources like [1]):"


class Supervisor:
    """Retrieve -> draft -> judge relevance (RAGAs) -> route (code, or the model) -> answer -> optionally save (MCP)."""

    def __init__(self, t: Target, config: SupervisorConfig | None = None, store: Any = None,
                 gateway: Endpoint | None = None) -> None:
        from helpers.layers.rag import knowledge

        self.target = t
        self.settings = t.settings
        self.config = config or SupervisorConfig()
        self.routing: Routing = check_routing(self.config.routing or ("model" if t.is_eks else "code"))
        # chat, judge and embeddings all go through the gateway (one URL, one key); tests may pass another endpoint
        self.gateway = gateway or t.gateway
        self.web_search_url = t.mcp_url("web-search")
        self.filesystem_url = t.mcp_url("filesystem")
        # a question's vector skips the gateway's response cache (NO_CACHE): it costs milliseconds, repeats are
        # rare, and each answer's trace then shows the embedding server (Ray Serve) every time
        self.embedder = knowledge.Embedder(replace(self.gateway, model=self.settings.served_embedding_model),
                                           max_retries=1, extra_body=NO_CACHE)
        self._store = store
        self._judge: Any = None
        self._client: Any = None
        self.cache_hits = CacheHits()  # model calls of this supervisor the gateway's response cache answered
        self._router: Any = None
        self._tool_agents: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.knowledge_checked = False  # ensure_knowledge() ran: the store holds chunks (or was just filled)
        self.ingested: Any = None  # the IngestReport when this supervisor had to index the knowledge base

    # ------------------------------------------------------------ parts, built on first use

    @property
    def store(self) -> Any:
        """The knowledge-base vector store of the target (Milvus Lite here, Amazon OpenSearch on EKS)."""
        if self._store is None:
            try:
                self._store = self.target.vector_store()
            except WorkshopError as exc:
                raise AgentError("vector-store", exc.message, exc.fix) from None
        return self._store

    @property
    def judge(self) -> Any:
        """The relevance judge (judge.Judge) on the gateway's chat route."""
        if self._judge is None:
            from helpers.layers.agent.judge import Judge

            self._judge = Judge(self.gateway, reason_chars=self.config.judge_reason_chars, cache_hits=self.cache_hits)
        return self._judge

    def client(self) -> Any:
        """The one AsyncOpenAI client every model call of this supervisor shares (traceparent on each request)."""
        if self._client is None:
            self._client = chat.async_client(self.gateway, cache_hits=self.cache_hits)
        return self._client

    def chat_model(self, max_tokens: int | None = None) -> Any:
        """A Strands OpenAIModel on the gateway, on the shared client."""
        return chat.chat_model(self.gateway, max_tokens or self.config.answer_max_tokens, client=self.client())

    def _tools(self, dependency: str) -> Any:
        """A Strands agent holding one MCP server's tools; code calls them directly (agent.tool.<name>).

        One agent per server, so a server that is down affects only its own tools."""
        if dependency not in self._tool_agents:
            from strands import Agent
            from strands.tools.mcp import MCPClient

            url = {"mcp-web-search": self.web_search_url, "mcp-filesystem": self.filesystem_url}[dependency]
            self._tool_agents[dependency] = Agent(model=self.chat_model(), tools=[MCPClient(url=url)],
                                                  callback_handler=None, name=f"supervisor-{dependency}")
        return self._tool_agents[dependency]

    # ------------------------------------------------------------ steps

    def ensure_knowledge(self) -> Any:
        """Make sure the knowledge base holds chunks: an empty (or missing) one is indexed from the bundled documents.

        Once per supervisor; idempotent (notebook 06's ingest writes only what is missing). Returns the IngestReport
        when it had to index, else None. With `auto_ingest=False` an empty knowledge base is an AgentError."""
        from helpers.layers.rag import knowledge
        from helpers.layers.rag.stores import VectorStoreError

        with self._lock:
            if self.knowledge_checked:
                return None
            store = self.store
            try:
                empty = store.count() == 0
            except VectorStoreError:  # no collection or index yet
                empty = True
            if empty and not self.config.auto_ingest:
                raise AgentError("vector-store", "The knowledge base is empty: no document has been indexed yet.",
                                 "Index it with notebook 06 (or `evaluation.ensure_knowledge_base(t)`), or let the "
                                 "agent do it: SupervisorConfig(auto_ingest=True), the default.")
            if empty:
                try:
                    self.ingested = knowledge.ingest(store, self.embedder, progress=False)
                except (knowledge.EmbeddingError, knowledge.IngestError) as exc:
                    raise AgentError("gateway", f"The knowledge base was empty, and embedding the bundled documents "
                                     f"through the gateway failed: {exc}", "Check the gateway's embedding route "
                                     "(`python -m helpers.local.stack status`), then ask again: indexing resumes "
                                     "where it stopped.") from None
                except VectorStoreError as exc:
                    raise AgentError("vector-store", f"The knowledge base was empty and could not be filled: {exc}",
                                     "Check the vector store, then ask again.") from None
            self.knowledge_checked = True
            return self.ingested if empty else None

    def retrieve(self, question: str, k: int | None = None) -> list[Any]:
        """The top-k chunks for the question (one embedding through the gateway, one search in the store)."""
        from helpers.layers.rag.knowledge import EmbeddingError, search
        from helpers.layers.rag.stores import VectorStoreError

        self.ensure_knowledge()
        store = self.store
        try:
            return search(store, self.embedder, question, k=k or self.config.k)
        except EmbeddingError as exc:
            raise AgentError("gateway", f"embedding the question failed: {exc}") from None
        except VectorStoreError as exc:
            raise AgentError("vector-store", str(exc)) from None

    def candidates(self, hits: list[Any]) -> list[Any]:
        """The chunks the judge would be asked about: the top `judge_k` at or above the similarity floor."""
        return [h for h in hits[: self.config.judge_k] if h.score >= self.config.similarity_floor]

    def relevance(self, question: str, hits: list[Any], answer: str | None = None, texts: list[str] | None = None,
                  calls: list[Any] | None = None) -> dict[str, Any]:
        """RAGAs context precision (without reference) of the top chunks for `answer`, with an embedding fallback.

        `texts` are the chunks as the writer read them (source_text); the judge's model calls go into `calls`."""
        from helpers.layers.agent.judge import score_chunks

        cfg = self.config
        texts = texts or [source_text(h.text, cfg.answer_context_chars) for h in hits]
        return score_chunks(self.judge, question, hits[: cfg.judge_k], texts, answer or question, cfg, calls)

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

    def write(self, question: str, texts: list[str], titles: list[str], run: AskRun | None = None,
              event: str = "token", step: str = "answer", cancel: threading.Event | None = None) -> str:
        """The chat model writes the answer from the given sources only (streamed; its call measured into `run`)."""
        prompt = answer_prompt(question, texts, titles)
        on_text = run.text(event) if run is not None else None
        try:
            text, call = chat.write(self.chat_model(), SYSTEM_PROMPT, prompt, on_text, step, cancel)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - the model call failed: name the gateway
            raise AgentError("gateway", f"the chat model call failed: {type(exc).__name__}: {str(exc)[:300]}") from None
        if run is not None:
            run.calls.append(call)
        return text

    def write_answer(self, question: str, contexts: list[str], titles: list[str]) -> str:
        """The answer from raw source texts (cut like the writer reads them)."""
        return self.write(question, [source_text(c, self.config.answer_context_chars) for c in contexts], titles)

    # ------------------------------------------------------------ the whole thing

    def ask(self, question: str, save_as: str | None = None, routing: Routing | None = None) -> AgentAnswer:
        """Answer one question: knowledge base if the retrieved chunks are relevant, else web search."""
        return self._answer(question, save_as, routing, None, None)

    def ask_stream(self, question: str, save_as: str | None = None, routing: Routing | None = None
                   ) -> EventStream:
        """The same answer as a stream of events (streaming.py): route, sources, text as written, relevance, final."""
        question = check_question(question)  # a bad question fails here, before any event
        check_routing(routing or self.routing)
        return stream_events(lambda emit, cancel: self._answer(question, save_as, routing, emit, cancel))

    def _answer(self, question: str, save_as: str | None, routing: Routing | None, emit: Any,
                cancel: threading.Event | None) -> AgentAnswer:
        question, asked_path = parse_save_request(check_question(question))
        question = check_question(question)
        routing = check_routing(routing or self.routing)
        run = AskRun(emit)
        hits_before = self.cache_hits.count
        with tracer().start_as_current_span("agent.ask", attributes={"agent.question": question[:200],
                                                                     "agent.routing": routing}) as root:
            if routing == "model":
                answer = self.router().answer(question, save_as or asked_path, run, cancel)
            else:
                answer = self._answer_by_code(question, run, cancel)
                if save_as or asked_path:
                    with run.step("save"):
                        answer.saved = self.save(save_as or asked_path, answer)
            answer.trace_id = trace_id(root)
            root.set_attribute("agent.route", answer.route)
        run.finish()
        answer.timings, answer.steps, answer.first_token_s = run.timings, run.steps(), run.first_token_s
        answer.cache_hits = self.cache_hits.count - hits_before
        run.emit("final", answer.public())
        return answer

    def _answer_by_code(self, question: str, run: AskRun, cancel: threading.Event | None) -> AgentAnswer:
        cfg = self.config
        with run.step("retrieve"):
            hits = self.retrieve(question)
        texts = [source_text(h.text, cfg.answer_context_chars) for h in hits]  # read once: by the writer and judge
        written = [i for i, h in enumerate(hits) if h.score >= cfg.similarity_floor]  # the draft's sources
        draft = None
        if self.candidates(hits):  # something passed the floor: draft the knowledge-base answer, then judge it
            run.emit("route", {"route": "knowledge_base", "tentative": True, "routing": "code"})
            run.emit("sources", {"sources": [hit_source(hits[i]) for i in written]})
            with run.step("draft"):
                draft = self.write(question, [texts[i] for i in written], [hits[i].title for i in written], run,
                                   "draft", "draft", cancel)
        else:
            run.emit("route", {"route": "web_search", "tentative": False, "routing": "code"})
        with run.step("judge"):
            relevance = self.relevance(question, hits, draft, texts, run.calls)
        run.emit("relevance", relevance)
        if relevance["score"] >= cfg.threshold:
            sources = [hit_source(hits[i]) for i in written]
            return AgentAnswer(question, (draft or "") + "\n\n" + citation_line(sources), "knowledge_base", sources,
                               [texts[i] for i in written], relevance, {}, None)
        if draft is not None:
            run.emit("route_changed", {"from": "knowledge_base", "to": "web_search", "reason": (
                f"relevance {relevance['score']} < threshold {cfg.threshold}: the draft is discarded")})
        with run.step("web_search"):
            results = self.web_search(question)
        # the results as the writer reads them: what the answer carries as its contexts (and a judge of it reads)
        contexts = [source_text(r.get("content", ""), cfg.answer_context_chars) for r in results]
        sources = [web_source(r) for r in results]
        run.emit("sources", {"sources": sources})
        with run.step("answer"):
            if contexts:
                text = self.write(question, contexts, [r.get("title", "") for r in results], run, "token", "answer",
                                  cancel) + "\n\n" + citation_line(sources)
            else:
                text = "I found nothing to answer from: the knowledge base and the web search came back empty."
        return AgentAnswer(question, text, "web_search", sources, contexts, relevance, {}, None)

    def router(self) -> Any:
        """The model-routed supervisor (model_routing.ModelRouter), built on first use."""
        if self._router is None:
            from helpers.layers.agent.model_routing import ModelRouter

            self._router = ModelRouter(self)
        return self._router

    def close(self) -> None:
        """Release the vector store (Milvus Lite lets one process open it at a time) and the MCP connections."""
        if self._router is not None:
            self._router.close()
            self._router = None
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


def build_supervisor(t: Target, routing: Routing | None = None, **kwargs: Any) -> Supervisor:
    """A Supervisor on the target's gateway, knowledge base and MCP servers (kwargs: config=, store=, gateway=).

    `routing`: "code" or "model" (default: "model" on eks, "code" locally); each ask() may also choose."""
    if routing is not None:
        kwargs["config"] = replace(kwargs.get("config") or SupervisorConfig(), routing=check_routing(routing))
    return Supervisor(t, **kwargs)


__all__ = ["AgentAnswer", "AgentError", "Supervisor", "SupervisorConfig", "build_supervisor", "check_question",
           "check_routing", "parse_save_request", "load_questions", "MAX_QUESTION_CHARS", "ROUTINGS"]
