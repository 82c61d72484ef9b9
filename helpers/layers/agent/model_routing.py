"""`routing="model"`: the supervisor is a Strands agent whose tools are other agents (Strands' "Agents as Tools").

    sup = build_supervisor(t, routing="model")      # the default on eks (Qwen3-14B); locally the 0.5B model
    a = sup.ask("Why is my GPU pod stuck in Pending?")
    a.route, a.tools                                # e.g. knowledge_base, ['knowledge_base', 'relevance_judge']

The reference platform's supervisor is a model that calls specialists. Here each specialist is a Strands `Agent`
handed to the supervisor agent with `agent.as_tool(...)` (the documented pattern; `tools=[agent]` does the same
with defaults); the save action is a plain tool:

| tool of the supervisor | what it is | its own tool |
|---|---|---|
| `knowledge_base` | Agent: searches the knowledge base, answers with [n] | `search_knowledge_base` (top k chunks) |
| `relevance_judge` | Agent: RAGAs context precision of those chunks | `context_precision` (judge.py's verdicts) |
| `web_search` | Agent: searches the web, answers with [n] | `search_web` (the web-search MCP server's tool) |
| `save_answer` | a tool | the filesystem MCP server's `write_file` |

The model decides which to call and in what order; the instructions say: knowledge base, then the judge, then the
web if the judge says not relevant. The route is what the model did: `web_search` when it called the web agent,
`knowledge_base` when only the knowledge agent answered, `none` when it answered by itself. The answer is the last
specialist's (with code's source line), as in code routing. A 14B model follows this; a 0.5B model often calls
the wrong agent, calls one twice or answers by itself (tools/bench_agent.py measures how often).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from helpers.layers.agent import chat
from helpers.layers.agent.answers import AgentAnswer, AgentError, citation_line, hit_source, source_text, web_source
from helpers.layers.agent.judge import ModelCall
from helpers.layers.agent.steps import AskRun

SUPERVISOR_PROMPT = (
    "You are a supervisor. You never answer from your own knowledge: specialists answer.\n"
    "1. Call knowledge_base with the question.\n"
    "2. Call relevance_judge with the question.\n"
    "3. If relevance_judge says not relevant, call web_search with the question.\n"
    "4. If the user asked to save the answer to a file, call save_answer with the path.\n"
    "Then reply with one short sentence naming the specialist that answered."
)
KNOWLEDGE_PROMPT = ("Call search_knowledge_base with the question, then answer only from the numbered sources it "
                    "returns. Cite them like [1]. Answer in at most four sentences.")
JUDGE_PROMPT = "Call context_precision with the question, then reply with its verdict in one sentence."
WEB_PROMPT = ("Call search_web with the question, then answer only from the numbered results it returns. "
              "Cite them like [1]. Answer in at most four sentences.")
SUPERVISOR_TURNS = 5  # knowledge, judge, web, save, the closing sentence
SUPERVISOR_MAX_TOKENS = 160
JUDGE_AGENT_MAX_TOKENS = 48  # the relevance agent repeats its tool's verdict in one sentence
ANSWERING = ("knowledge_base", "web_search")  # the specialists that answer: one of them is the first step
TEXT_EVENTS = {"knowledge_base": "draft", "web_search": "token"}


@dataclass
class Turn:
    """What one model-routed answer collected on its way (per question; never shared)."""

    question: str
    run: AskRun
    cancel: threading.Event | None
    hits: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # specialist -> its answer
    relevance: dict[str, Any] | None = None
    saved: dict[str, Any] | None = None
    tools: list[str] = field(default_factory=list)
    route: str | None = None  # the route announced to the stream so far
    streams: dict[str, chat.TextStream] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    boss: Any = None  # the supervisor agent answering this question
    error: AgentError | None = None  # a dependency that failed under a tool: the answer fails with it


def staged_model(sup: Any, max_tokens: int, first: str, then: str, first_tools: tuple[str, ...] = ()) -> Any:
    """A Strands OpenAIModel on the supervisor's client whose `tool_choice` is `first` on a question's first call and
    `then` once tool results came back ("required", "auto" or "none": OpenAI's values, which vLLM and the local
    model server honour); `first_tools`, when given, are the only tools offered on the first call.

    The supervisor agent runs required -> auto, offered knowledge_base or web_search first: its first step must
    hand the question to a specialist that answers, and which one (the route) and what follows stay its decision.
    A specialist runs required -> none: it calls its one tool once, then answers with no tool in its prompt (a 0.5B
    model otherwise calls the same tool again and again, or writes a call as text, after its result). An answer cut
    at the token cap ends the turn instead of raising (Strands' MaxTokensReachedException would turn a specialist's
    long answer into a tool error)."""
    from strands.models.openai import OpenAIModel

    class StagedModel(OpenAIModel):
        def format_request(self, messages: Any, tool_specs: Any = None, system_prompt: Any = None,
                           tool_choice: Any = None, **kwargs: Any) -> dict[str, Any]:
            last = messages[-1] if messages else {}
            opening = not any("toolResult" in block for block in last.get("content", []))
            if tool_specs and opening and first_tools:
                tool_specs = [spec for spec in tool_specs if spec["name"] in first_tools]
            request = super().format_request(messages, tool_specs, system_prompt, tool_choice, **kwargs)
            if tool_specs and tool_choice is None:  # Strands' own choice (structured output) is left alone
                request["tool_choice"] = first if opening else then
                if request["tool_choice"] == "none":  # nothing to call: the tools leave the prompt too
                    del request["tool_choice"], request["tools"]
            return request

        def format_chunk(self, event: dict[str, Any], **kwargs: Any) -> Any:
            if event.get("chunk_type") == "message_stop" and event.get("data") == "length":
                event = {**event, "data": "stop"}
            return super().format_chunk(event, **kwargs)

    return StagedModel(client=sup.client(), model_id=sup.gateway.model, stream=True,
                       params={"temperature": 0, "max_tokens": max_tokens})


class ModelRouter:
    """The agents-as-tools supervisor around a Supervisor's parts (store, judge, writer model, MCP tools)."""

    def __init__(self, sup: Any) -> None:
        from strands import Agent, tool

        self.sup = sup
        self.turn: Turn | None = None
        self._lock = threading.Lock()  # one model-routed answer at a time (the agents keep per-call state)

        @tool
        def search_knowledge_base(query: str) -> str:
            """Search the team's knowledge base (Kubernetes, Amazon EKS, GPUs, LLM serving, RAG, observability).

            Args:
                query: what to search for, usually the question itself
            """
            return self._guarded(self._search_knowledge_base, query)

        @tool
        def context_precision(question: str) -> str:
            """RAGAs context precision: were the knowledge-base chunks useful for the knowledge-base answer?

            Args:
                question: the user's question
            """
            return self._guarded(self._context_precision, question)

        @tool
        def search_web(query: str) -> str:
            """Search the web (news, events, people, anything current or outside the knowledge base).

            Args:
                query: what to search for, usually the question itself
            """
            return self._guarded(self._search_web, query)

        @tool
        def save_answer(path: str) -> str:
            """Save the answer (with its sources) to a Markdown file in the workspace.

            Args:
                path: a relative path such as notes/answer.md
            """
            return self._guarded(self._save, path)

        def specialist(name: str, description: str, prompt: str, tools: list[Any]) -> Any:
            cap = sup.config.answer_max_tokens if name in ANSWERING else JUDGE_AGENT_MAX_TOKENS
            model = staged_model(sup, cap, "required", "none")
            agent = Agent(model=model, name=name, description=description, system_prompt=prompt,
                          tools=tools, callback_handler=lambda **event: self._on_text(name, event))
            return agent.as_tool(name=name, description=description)

        self.tools = [
            specialist("knowledge_base", "Answers questions about Kubernetes, Amazon EKS, GPUs, LLM serving (vLLM, "
                       "Ray, LiteLLM), RAG and observability from the team's knowledge base, with citations. Input: "
                       "the question.", KNOWLEDGE_PROMPT, [search_knowledge_base]),
            specialist("relevance_judge", "Says whether the knowledge base's answer rests on relevant sources "
                       "(RAGAs context precision). Input: the question.", JUDGE_PROMPT, [context_precision]),
            specialist("web_search", "Answers from a web search, for questions the knowledge base cannot answer. "
                       "Input: the question.", WEB_PROMPT, [search_web]),
            save_answer,
        ]

    # ------------------------------------------------------------ the specialists' tools

    def _guarded(self, tool: Any, argument: str) -> str:
        """Run a tool; a failing dependency (AgentError) stops the whole answer instead of becoming the model's
        problem: the API answers it with the dependency's 5xx, as in code routing."""
        turn = self._current()
        try:
            return tool(argument)
        except AgentError as exc:
            turn.error = turn.error or exc
            if turn.boss is not None:
                turn.boss.cancel()  # the specialists share its cancel signal
            raise

    def _search_knowledge_base(self, query: str) -> str:

        turn = self._current()
        with turn.run.step("retrieve"):
            turn.hits = self.sup.retrieve(query or turn.question)
        turn.texts = [source_text(h.text, self.sup.config.answer_context_chars) for h in turn.hits]
        turn.run.emit("sources", {"sources": [hit_source(h) for h in turn.hits]})
        if not turn.hits:
            return "The knowledge base has nothing on this."
        return "\n\n".join(f"[{i}] {h.title}\n{text}" for i, (h, text) in enumerate(zip(turn.hits, turn.texts), 1))

    def _context_precision(self, question: str) -> str:
        turn = self._current()
        answer = turn.answers.get("knowledge_base")
        if answer is None:
            return "There is no knowledge-base answer to judge yet: call knowledge_base first."
        with turn.run.step("judge"):
            turn.relevance = self.sup.relevance(turn.question, turn.hits, answer, turn.texts, turn.run.calls)
        turn.run.emit("relevance", turn.relevance)
        score, threshold = turn.relevance["score"], turn.relevance["threshold"]
        if score >= threshold:
            return f"relevant (context precision {score} >= {threshold}): the knowledge-base answer stands."
        return f"not relevant (context precision {score} < {threshold}): call web_search."

    def _search_web(self, query: str) -> str:

        turn = self._current()
        with turn.run.step("web_search"):
            turn.results = self.sup.web_search(query or turn.question)
        turn.run.emit("sources", {"sources": [web_source(r) for r in turn.results]})
        if not turn.results:
            return "The web search found nothing."
        cut = self.sup.config.answer_context_chars
        return "\n\n".join(f"[{i}] {r.get('title', '')}\n{source_text(r.get('content', ''), cut)}"
                           for i, r in enumerate(turn.results, 1))

    def _save(self, path: str) -> str:
        turn = self._current()
        answer = self._result(turn, "")
        with turn.run.step("save"):
            turn.saved = self.sup.save(path, answer)
        return f"saved to {path} ({turn.saved['bytes']} bytes)"

    # ------------------------------------------------------------ what the supervisor model does, observed

    def _current(self) -> Turn:
        if self.turn is None:
            raise RuntimeError("a specialist was called outside a model-routed answer")
        return self.turn

    def _on_text(self, name: str, event: dict[str, Any]) -> None:
        turn = self.turn
        if turn is not None and name in turn.streams:
            turn.streams[name](**event)

    def _before_tool(self, event: Any) -> None:
        turn, name = self._current(), event.tool_use["name"]
        if name in turn.tools:  # asked twice, a specialist answers the same: the model is looping, so stop it there
            event.cancel_tool = f"{name} already answered; use its answer above."
            event.agent.cancel(after_current_tools=True)
            return
        turn.tools.append(name)
        turn.started[name] = time.perf_counter()
        if name == "web_search" and turn.route == "knowledge_base":
            turn.run.emit("route_changed", {"from": "knowledge_base", "to": "web_search",
                                            "reason": "the supervisor model called the web-search agent"})
        if name in TEXT_EVENTS and turn.route != name:
            if turn.route is None:
                turn.run.emit("route", {"route": name, "tentative": name == "knowledge_base", "routing": "model"})
            turn.route = name
        if name in TEXT_EVENTS or name == "relevance_judge":
            on_text = turn.run.text(TEXT_EVENTS[name]) if name in TEXT_EVENTS else None
            turn.streams[name] = chat.TextStream(on_text, name)

    def _after_tool(self, event: Any) -> None:
        turn, name = self._current(), event.tool_use["name"]
        seconds = time.perf_counter() - turn.started.pop(name, time.perf_counter())
        turn.run.timings[name] = round(turn.run.timings.get(name, 0.0) + seconds, 3)
        if (stream := turn.streams.pop(name, None)) is not None:
            turn.run.calls.append(stream.finish(None))
        if name in TEXT_EVENTS and event.result.get("status") == "success":
            text = " ".join(c.get("text", "") for c in event.result.get("content", []) if isinstance(c, dict))
            turn.answers[name] = chat.strip_think(text)

    # ------------------------------------------------------------ one answer

    def answer(self, question: str, save_as: str | None, run: AskRun, cancel: threading.Event | None) -> Any:
        """Let the supervisor model route one question; the AgentAnswer of what it did."""
        from strands import Agent
        from strands.hooks import AfterToolCallEvent, BeforeToolCallEvent

        with self._lock:
            self.turn = turn = Turn(question, run, cancel)
            try:
                boss = Agent(model=staged_model(self.sup, SUPERVISOR_MAX_TOKENS, "required", "auto", ANSWERING),
                             system_prompt=SUPERVISOR_PROMPT,
                             tools=self.tools, callback_handler=None, name="supervisor")
                turn.boss = boss
                boss.hooks.add_callback(BeforeToolCallEvent, self._before_tool)
                boss.hooks.add_callback(AfterToolCallEvent, self._after_tool)
                prompt = question + (f"\nSave the answer to {save_as}." if save_as else "")
                started = time.perf_counter()
                try:
                    result = boss(prompt, limits={"turns": SUPERVISOR_TURNS}, cancel_signal=cancel)
                except Exception as exc:  # noqa: BLE001 - the supervisor model's call failed: name the gateway
                    raise turn.error or AgentError("gateway", f"the supervisor model failed: {type(exc).__name__}: "
                                                              f"{str(exc)[:300]}") from None
                if turn.error is not None:
                    raise turn.error
                spent = time.perf_counter() - started - sum(turn.run.timings.get(n, 0.0) for n in set(turn.tools))
                usage = result.metrics.accumulated_usage if result.metrics else {}
                run.calls.append(ModelCall("supervisor", max(spent, 0.0), usage.get("inputTokens") or None,
                                           usage.get("outputTokens") or None))
                answer = self._result(turn, chat.strip_think(str(result)))
                if save_as and turn.saved is None:  # asked through the API: code saves what the model did not
                    with run.step("save"):
                        turn.saved = {**self.sup.save(save_as, answer), "by": "code"}
                answer.saved = turn.saved
                return answer
            finally:
                self.turn = None

    def _result(self, turn: Turn, own_text: str) -> Any:

        relevance = turn.relevance or {"score": None, "method": "not asked", "judge_failures": 0, "judged": 0,
                                       "threshold": self.sup.config.threshold, "verdicts": []}
        if "web_search" in turn.answers:
            route, text = "web_search", turn.answers["web_search"]
            cut = self.sup.config.answer_context_chars  # the contexts as the writer read them, as on every route
            contexts = [source_text(r.get("content", ""), cut) for r in turn.results]
            sources = [web_source(r) for r in turn.results]
        elif "knowledge_base" in turn.answers:
            route, text, contexts = "knowledge_base", turn.answers["knowledge_base"], turn.texts
            sources = [hit_source(h) for h in turn.hits]
        else:  # the model answered by itself: no specialist, no sources
            if own_text:
                turn.run.text("token")(own_text)
            return AgentAnswer(turn.question, own_text, "none", [], [], relevance, {}, None, routing="model",
                               tools=list(turn.tools))
        body = text + ("\n\n" + citation_line(sources) if sources else "")
        return AgentAnswer(turn.question, body, route, sources, contexts, relevance, {}, None, routing="model",
                           tools=list(turn.tools))

    def close(self) -> None:
        """Nothing to release: the specialists use the Supervisor's connections."""
