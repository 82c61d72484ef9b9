"""The supervisor agent: its question set, the code-made decisions, and both routing modes with the real local model."""

from __future__ import annotations

import pytest

from helpers.layers.agent import supervisor as agent, judge

ROUTING_CASES = [  # (question, expected route): one inside the knowledge base, one outside
    ("Why is my GPU pod stuck in Pending?", "knowledge_base"),
    ("Who won the Riverside City Marathon?", "web_search"),
]
DOCUMENTS = ("troubleshooting/pending-pods.md", "concepts/kv-cache.md", "components/mcp.md")


def test_question_set_is_balanced_and_complete() -> None:
    questions = agent.load_questions()
    kb = [q for q in questions if q["route"] == "knowledge_base"]
    assert len(questions) >= 20 and len(kb) * 2 == len(questions)
    assert all(q.get("reference") and q.get("source") for q in kb)
    assert len({q["id"] for q in questions}) == len(questions)
    from helpers.layers.rag.knowledge import KNOWLEDGE_DIR

    assert all((KNOWLEDGE_DIR / q["source"]).exists() for q in kb)


@pytest.mark.parametrize("text, question, path", [
    ("What does PagedAttention do? Save it to notes/paged.md", "What does PagedAttention do?", "notes/paged.md"),
    ("Explain HNSW and save the answer as hnsw.txt.", "Explain HNSW", "hnsw.txt"),
    ("What is a KV cache?", "What is a KV cache?", None),
])
def test_save_requests_are_parsed_by_code(text: str, question: str, path: str | None) -> None:
    assert agent.parse_save_request(text) == (question, path)


@pytest.mark.parametrize("bad", ["", "   ", None, 3, "x" * (agent.MAX_QUESTION_CHARS + 1)])
def test_bad_questions_are_refused_with_a_message(bad: object) -> None:
    with pytest.raises(ValueError, match="question"):
        agent.check_question(bad)


def test_average_precision_matches_ragas() -> None:
    assert judge.average_precision([1, 0]) == pytest.approx(1.0)
    assert judge.average_precision([0, 1]) == pytest.approx(0.5)
    assert judge.average_precision([0, 0]) == pytest.approx(0.0)


def test_the_judge_stops_once_the_score_is_fixed() -> None:
    from helpers.layers.agent.supervisor import exact_precision

    assert exact_precision([1], 1) == 1.0  # a useful top chunk: 1.0 whatever the second verdict
    assert exact_precision([0], 1) is None  # [0, 0] -> 0.0 but [0, 1] -> 0.5: ask about the second chunk
    assert exact_precision([], 2) is None
    assert exact_precision([1, 0], 1) is None  # with three chunks, [1, 0, 1] differs from [1, 0, 0]
    assert exact_precision([0, 1], 0) == 0.5


def test_judge_environment_is_offline_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    env = judge.prepare_environment()
    assert env["RAGAS_DO_NOT_TRACK"] == "true"
    from helpers.config import ROOT

    if (ROOT / ".venvs" / "litellm").exists():  # the gateway's venv holds the encodings
        assert env["TIKTOKEN_CACHE_DIR"].endswith("tokenizers")


@pytest.fixture
def local_supervisor(isolated_settings):
    """A supervisor on an isolated stack: the model servers directly (no gateway), web search, a small index.

    Chat and judge go to the chat model server (`t.chat`); embeddings to the llama.cpp embedding server, given
    to the supervisor explicitly (its own embedder would use the gateway, which this stack does not run)."""
    from helpers.layers.rag import knowledge
    from helpers.local import stack
    from helpers.target import Endpoint, Target

    t = Target("local", isolated_settings)
    try:
        for name in ("model-server", "embedding-server", "mcp-web-search"):
            stack.ensure(name)
        sup = agent.build_supervisor(t, gateway=t.chat)
        sup.embedder = knowledge.Embedder(Endpoint(isolated_settings.embedding_server_url,
                                                   isolated_settings.model_server_api_key,
                                                   isolated_settings.served_embedding_model, "embedding server"),
                                          max_retries=1)
        try:
            docs = [d for d in knowledge.load_documents() if d.source in DOCUMENTS]
            knowledge.ingest(sup.store, sup.embedder, docs, progress=False)  # the target's store: Milvus Lite
            yield sup
        finally:
            sup.close()
    finally:
        stack.down()


def test_routing_defaults_to_code_here_and_to_the_model_on_eks(isolated_settings) -> None:
    from helpers.target import Target

    assert agent.build_supervisor(Target("local", isolated_settings)).routing == "code"
    assert agent.build_supervisor(Target("eks", isolated_settings)).routing == "model"
    assert agent.build_supervisor(Target("local", isolated_settings), routing="model").routing == "model"
    with pytest.raises(ValueError, match="routing"):
        agent.build_supervisor(Target("local", isolated_settings), routing="llm")


def test_the_model_routed_supervisor_must_delegate_first_then_chooses(isolated_settings) -> None:
    from helpers.layers.agent.model_routing import staged_model
    from helpers.target import Target

    sup = agent.build_supervisor(Target("local", isolated_settings))
    model = staged_model(sup, 64, "required", "auto")
    spec = [{"name": "knowledge_base", "description": "d", "inputSchema": {"json": {"type": "object"}}}]
    question = [{"role": "user", "content": [{"text": "Why Pending?"}]}]
    result = [*question, {"role": "assistant", "content": [{"toolUse": {"toolUseId": "1", "name": "knowledge_base",
                                                                         "input": {"input": "Why Pending?"}}}]},
              {"role": "user", "content": [{"toolResult": {"toolUseId": "1", "status": "success",
                                                           "content": [{"text": "an answer"}]}}]}]
    assert model.format_request(question, spec)["tool_choice"] == "required"
    assert model.format_request(result, spec)["tool_choice"] == "auto"
    assert "tool_choice" not in model.format_request(question, None)  # no tools, nothing to choose
    both = [*spec, {**spec[0], "name": "relevance_judge"}]
    first = staged_model(sup, 64, "required", "auto", ("knowledge_base",)).format_request(question, both)
    assert [t["function"]["name"] for t in first["tools"]] == ["knowledge_base"]  # the first step must answer
    later = staged_model(sup, 64, "required", "auto", ("knowledge_base",)).format_request(result, both)
    assert len(later["tools"]) == 2
    answering = staged_model(sup, 64, "required", "none").format_request(result, spec)
    assert "tools" not in answering and "tool_choice" not in answering  # a specialist answers with no tool offered


def test_the_model_routed_supervisor_has_the_specialists_as_agent_tools(isolated_settings) -> None:
    from strands.agent._agent_as_tool import _AgentAsTool

    from helpers.target import Target

    router = agent.build_supervisor(Target("local", isolated_settings)).router()
    by_name = {t.tool_name: t for t in router.tools}
    assert set(by_name) == {"knowledge_base", "relevance_judge", "web_search", "save_answer"}
    assert all(isinstance(by_name[n], _AgentAsTool) for n in ("knowledge_base", "relevance_judge", "web_search"))


@pytest.mark.services
@pytest.mark.parametrize("question, route", ROUTING_CASES)
def test_code_routing_with_the_local_model(local_supervisor, question: str, route: str) -> None:
    answer = local_supervisor.ask(question, routing="code")
    assert answer.route == route, (question, answer.relevance)
    assert answer.answer.strip() and answer.routing == "code"
    assert answer.sources and len(answer.contexts) == len(answer.sources)
    assert answer.relevance["method"] in ("ragas", "ragas+embedding", "embedding", "floor")
    assert answer.timings["total"] >= answer.timings["retrieve"]
    assert answer.first_token_s is not None and answer.first_token_s < answer.timings["total"]
    steps = [s["step"] for s in answer.steps]
    if route == "knowledge_base":
        assert answer.sources[0]["source"] == "troubleshooting/pending-pods.md"
        assert steps[0] == "draft" and "judge" in steps
        judge_call = answer.steps[steps.index("judge")]
        assert judge_call["completion_tokens"] <= 10 and judge_call["prompt_tokens"] > 900  # a verdict, ragas' prompt
    else:
        assert "web_search" in answer.timings and steps[-1] == "answer"


@pytest.mark.services
@pytest.mark.parametrize("question, route", ROUTING_CASES)
def test_model_routing_with_the_local_model(local_supervisor, question: str, route: str) -> None:
    """The 0.5B model's routing is not asserted (tools/bench_agent.py measures it); the mechanics are."""
    events = list(local_supervisor.ask_stream(question, routing="model"))
    assert events[-1].name == "final", events[-1].data
    final = events[-1].data
    assert final["routing"] == "model" and final["answer"].strip()
    assert final["tools"], "the supervisor model's first call must hand the question to a specialist"
    assert set(final["tools"]) <= {"knowledge_base", "relevance_judge", "web_search", "save_answer"}
    tools = final["tools"]
    expected_route = ("web_search" if "web_search" in tools else "knowledge_base" if "knowledge_base" in tools
                      else "none")
    assert final["route"] == expected_route
    if expected_route != "none":
        assert final["sources"] and "route" in [e.name for e in events]
    assert any(s["step"] == "supervisor" for s in final["steps"])


@pytest.mark.services
def test_an_answer_cut_at_the_token_limit_is_kept_and_marked(local_supervisor) -> None:
    local_supervisor.config.answer_max_tokens = 4  # far too few: Strands raises MaxTokensReachedException
    text = local_supervisor.write_answer("Why is my GPU pod stuck in Pending?", ["Pods wait for a node."], ["Pending"])
    assert text.endswith("(cut short at the answer's token limit)") and len(text) > len(" … (cut short")


def test_model_calls_answered_from_the_gateways_cache_are_counted() -> None:
    import asyncio

    import httpx

    from helpers.layers.agent.steps import CacheHits
    from helpers.layers.gateway.timing import CACHE_KEY_HEADER

    def handler(request: httpx.Request) -> httpx.Response:
        cached = request.url.path == "/hit"
        return httpx.Response(200, headers={CACHE_KEY_HEADER: "abc"} if cached else {}, json={})

    hits = CacheHits()
    client = hits.watch(httpx.Client(transport=httpx.MockTransport(handler)))
    client.get("http://gateway/hit"), client.get("http://gateway/miss")
    assert hits.count == 1

    async def both() -> None:
        async with hits.watch(httpx.AsyncClient(transport=httpx.MockTransport(handler))) as aclient:
            await aclient.get("http://gateway/hit")
            await aclient.get("http://gateway/miss")

    asyncio.run(both())
    assert hits.count == 2


class HashEmbedder:
    """A stand-in embedder for the store logic only: a fixed unit vector per text (or a failure), no model."""

    def __init__(self, fail: bool = False) -> None:
        from helpers.target import Endpoint

        self.dim, self.fail, self.calls = 384, fail, 0
        self.endpoint = Endpoint("http://127.0.0.1:9/v1", None, "embedding", "test embedder")

    def embed(self, texts):
        import numpy as np

        from helpers.layers.rag.knowledge import EmbeddingError

        self.calls += 1
        if self.fail:
            raise EmbeddingError("the embedding route answered HTTP 503")
        vectors = np.array([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_one(self, text):
        return self.embed([text])[0]


def test_an_empty_knowledge_base_is_indexed_once_on_first_use(isolated_settings) -> None:
    from helpers.target import Target

    t = Target("local", isolated_settings)
    sup = agent.build_supervisor(t)
    sup.embedder = HashEmbedder()
    try:
        report = sup.ensure_knowledge()
        assert report is not None and sup.store.count() > 0 and report.chunks_written == sup.store.count()
        calls = sup.embedder.calls
        assert sup.ensure_knowledge() is None and sup.embedder.calls == calls  # once per supervisor
    finally:
        sup.close()
    again = agent.build_supervisor(t)
    again.embedder = HashEmbedder()
    try:
        assert again.ensure_knowledge() is None and again.embedder.calls == 0  # not empty: nothing to index
    finally:
        again.close()


def test_an_empty_knowledge_base_without_auto_ingest_or_with_a_failing_embedder_says_what_to_do(isolated_settings) -> None:
    from helpers.target import Target

    t = Target("local", isolated_settings)
    sup = agent.build_supervisor(t, config=agent.SupervisorConfig(auto_ingest=False))
    try:
        with pytest.raises(agent.AgentError, match="empty") as info:
            sup.retrieve("Why is my GPU pod stuck in Pending?")
        assert info.value.dependency == "vector-store" and "notebook 06" in (info.value.fix or "")
    finally:
        sup.close()
    sup = agent.build_supervisor(t)
    sup.embedder = HashEmbedder(fail=True)
    try:
        with pytest.raises(agent.AgentError, match="503") as info:
            sup.retrieve("Why is my GPU pod stuck in Pending?")
        assert info.value.dependency == "gateway" and not sup.knowledge_checked
        from helpers.layers.rag.stores import VectorStoreError

        try:
            assert sup.store.count() == 0  # a failed embedding wrote nothing
        except VectorStoreError:
            pass  # or not even the collection
    finally:
        sup.close()
