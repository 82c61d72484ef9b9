"""The knowledge base and its ingestion: documents, token-aware chunks, idempotent writes, failures that write nothing.

Ingestion runs against the real embedding server of an isolated stack (own state folder and ports) and a
real Milvus Lite file; the failure cases point the client at a real loopback HTTP server that answers badly,
or at a closed port.
"""

from __future__ import annotations

import dataclasses
import math
import re
import socket
from pathlib import Path

import pytest

from helpers.layers.rag import knowledge
from helpers.local import stack
from helpers.layers.models import get_spec
from helpers.layers.rag.stores.milvus import MilvusStore
from helpers.target import Endpoint, Target
from tests.local_http import serve

DIM = 384
SUBSET = ("components/karpenter.md", "concepts/chunking.md", "troubleshooting/oomkilled.md",
          "troubleshooting/pending-pods.md")


# ---------------------------------------------------------------- the documents


def test_knowledge_base_has_at_least_40_documents_of_150_to_500_words_with_metadata():
    docs = knowledge.load_documents()
    assert len(docs) >= 40
    for doc in docs:
        assert 150 <= doc.words <= 500, f"{doc.source}: {doc.words} words"
        assert doc.title and doc.tags, doc.source
        assert doc.category in knowledge.CATEGORIES, doc.source
        assert all(re.fullmatch(r"[a-z0-9-]+", t) for t in doc.tags), f"{doc.source}: tags {doc.tags}"
    assert len({d.title for d in docs}) == len(docs), "titles are unique"
    assert {d.category for d in docs} == set(knowledge.CATEGORIES)
    topics = " ".join(d.source for d in docs)
    for needed in ("vllm", "paged-attention", "tensor-parallelism", "kv-cache", "karpenter", "eks-auto-mode",
                   "gp3", "kuberay", "ray-serve", "llama-cpp", "litellm", "langfuse", "opentelemetry", "prometheus",
                   "opensearch", "hnsw", "milvus", "embeddings", "chunking", "retrieval-augmented", "mcp", "strands",
                   "ragas", "pod-identity", "least-privilege", "cost", "pending", "oomkilled", "gpu-quota",
                   "hf-token", "probe", "crashloopbackoff", "imagepullbackoff"):
        assert needed in topics, f"no document about {needed}"


def test_a_document_without_front_matter_or_tags_is_refused_with_the_fix(tmp_path: Path):
    (tmp_path / "concepts").mkdir()
    bad = tmp_path / "concepts" / "bad.md"
    bad.write_text("# No front matter\n\nJust text.\n")
    with pytest.raises(knowledge.KnowledgeError, match="title:"):
        knowledge.parse_document(bad, tmp_path)
    bad.write_text("---\ntitle: Only a title\n---\n\nText.\n")
    with pytest.raises(knowledge.KnowledgeError, match="tags:"):
        knowledge.parse_document(bad, tmp_path)
    bad.write_text("---\ntitle: Fine\ntags: [a, b]\n---\n\nText.\n")
    doc = knowledge.parse_document(bad, tmp_path)
    assert (doc.source, doc.title, doc.tags, doc.category) == ("concepts/bad.md", "Fine", ("a", "b"), "concepts")


# ---------------------------------------------------------------- chunks


@pytest.fixture(scope="module")
def counter() -> knowledge.TokenCounter:
    return knowledge.token_counter()


def _doc(source: str) -> knowledge.Document:
    return next(d for d in knowledge.load_documents() if d.source == source)


def test_chunks_fit_the_model_overlap_and_cover_the_whole_document(counter):
    for doc in knowledge.load_documents():
        chunks = knowledge.chunk_document(doc, counter, max_tokens=256, overlap=48)
        assert chunks, doc.source
        for c in chunks:
            assert c.n_tokens == counter.count(c.embedding_text) <= 256
        assert [c.position for c in chunks] == list(range(len(chunks)))
        words = " ".join(doc.text.split())
        covered = " ".join(" ".join(c.text.split()) for c in chunks)
        assert all(w in covered for w in words.split()), doc.source
        for before, after in zip(chunks, chunks[1:]):
            head = " ".join(after.text.split()[:3])
            assert head in " ".join(before.text.split()), f"{doc.source}: chunk {after.position} does not overlap"


def test_small_budgets_still_make_valid_chunks_and_bad_settings_are_refused(counter):
    doc = _doc("concepts/hnsw.md")
    chunks = knowledge.chunk_document(doc, counter, max_tokens=64, overlap=8)
    assert len(chunks) > 8 and all(c.n_tokens <= 64 for c in chunks)
    with pytest.raises(ValueError, match="max_tokens"):
        knowledge.chunk_document(doc, counter, max_tokens=10)
    with pytest.raises(ValueError, match="overlap"):
        knowledge.chunk_document(doc, counter, max_tokens=128, overlap=100)


def test_chunk_ids_are_stable_and_change_only_where_the_text_changed(counter):
    doc = _doc("components/vllm.md")
    first = knowledge.chunk_document(doc, counter)
    again = knowledge.chunk_document(doc, counter)
    assert [c.id for c in first] == [c.id for c in again]
    assert all(re.fullmatch(r"[0-9a-f]{64}", c.id) for c in first)
    edited = dataclasses.replace(doc, text=doc.text + "\n\nAn extra closing paragraph about vLLM's log output.")
    changed = knowledge.chunk_document(edited, counter)
    assert [c.id for c in changed[:-1]][: len(first) - 1] == [c.id for c in first[:-1]]
    assert changed[-1].id != first[-1].id
    moved = dataclasses.replace(doc, source="components/vllm-copy.md")
    assert not {c.id for c in knowledge.chunk_document(moved, counter)} & {c.id for c in first}


# ---------------------------------------------------------------- ingestion against the real embedding server


@pytest.fixture
def embedding_stack(isolated_settings):
    stack.ensure("embedding-server")
    yield isolated_settings
    stack.down()


def _embedder(settings) -> knowledge.Embedder:
    """The isolated stack's llama.cpp embedding server, named explicitly: this stack runs no gateway."""
    endpoint = Endpoint(settings.embedding_server_url, settings.model_server_api_key,
                        settings.served_embedding_model, "embedding server")
    return knowledge.Embedder(endpoint, dim=DIM)


def _subset() -> list[knowledge.Document]:
    return [d for d in knowledge.load_documents() if d.source in SUBSET]


def _all_ids(store: MilvusStore) -> list[str]:
    return sorted(store.export_vectors()[0])


@pytest.mark.services
def test_token_counts_match_what_the_embedding_server_reads(embedding_stack, counter):
    from openai import OpenAI

    settings = embedding_stack
    client = OpenAI(base_url=settings.embedding_server_url, api_key=settings.model_server_api_key.get_secret_value())
    chunks = knowledge.chunk_document(_doc("concepts/kv-cache.md"), counter)
    answer = client.embeddings.create(model=settings.served_embedding_model, input=[c.embedding_text for c in chunks])
    assert answer.usage.prompt_tokens == sum(c.n_tokens for c in chunks)


@pytest.mark.services
def test_reingest_creates_no_duplicates_and_an_edit_replaces_only_that_documents_chunks(embedding_stack, tmp_path):
    embedder = _embedder(embedding_stack)
    docs = _subset()
    with MilvusStore(tmp_path / "kb.db") as store:
        first = knowledge.ingest(store, embedder, docs, progress=False)
        assert (first.added, first.updated, first.unchanged, first.deleted) == (len(docs), 0, 0, 0)
        ids = _all_ids(store)
        assert first.chunks_written == first.chunks_total == len(ids) == len(set(ids))

        second = knowledge.ingest(store, embedder, docs, progress=False)
        assert (second.added, second.updated, second.unchanged, second.deleted) == (0, 0, len(docs), 0)
        assert second.chunks_written == second.chunks_deleted == second.batches == 0
        assert _all_ids(store) == ids, "a second run writes nothing and duplicates nothing"

        target = docs[0]
        edited = dataclasses.replace(target, text=target.text + "\n\nThe workshop's mascot for Karpenter is a purple "
                                                               "carpenter ant called Kiri.")
        before = store.ids_for_source(target.source)
        third = knowledge.ingest(store, embedder, [edited, *docs[1:]], progress=False)
        assert (third.added, third.updated, third.unchanged) == (0, 1, len(docs) - 1)
        after = store.ids_for_source(target.source)
        expected = {c.id for c in knowledge.chunk_document(edited, knowledge.token_counter())}
        assert after == expected, "the edited document holds exactly its new chunks"
        assert third.chunks_written == len(after - before) and third.chunks_deleted == len(before - after)
        assert 0 < third.chunks_written < len(after) or len(after) == 1, "unchanged chunks were kept, not re-embedded"
        for other in docs[1:]:
            assert store.ids_for_source(other.source) <= set(ids), "other documents were not touched"
        hits = knowledge.search(store, embedder, "What is the name of the purple carpenter ant mascot?", k=3)
        assert hits[0].source == target.source and -1 <= hits[0].score <= 1

        fourth = knowledge.ingest(store, embedder, docs[1:], progress=False)
        assert fourth.deleted == 1 and store.ids_for_source(target.source) == set()
        assert store.sources() == {d.source for d in docs[1:]}


@pytest.mark.services
def test_an_embedding_failure_writes_nothing(embedding_stack, tmp_path):
    embedder = _embedder(embedding_stack)
    docs = _subset()
    calls = []

    def failing(request):
        calls.append(request.path)
        return 500, {"error": {"message": "the model crashed", "type": "server_error"}}

    with MilvusStore(tmp_path / "kb.db") as store, serve(failing) as server:
        broken = knowledge.Embedder(Endpoint(server.url + "/v1", None, "embedding", "custom"),
                                    dim=DIM, max_retries=0)
        with pytest.raises(knowledge.IngestError, match=r"(?s)batch 1 of \d+.*HTTP 500.*Nothing from this batch"):
            knowledge.ingest(store, broken, docs, progress=False)
        assert calls == ["/v1/embeddings"], "stopped at the first failure"
        assert store.count() == 0, "nothing was written"

        good = knowledge.ingest(store, embedder, docs, progress=False)
        ids = _all_ids(store)
        edited = [dataclasses.replace(d, text=d.text + "\n\nOne more sentence.") for d in docs]
        with pytest.raises(knowledge.IngestError, match="no stale chunk was deleted"):
            knowledge.ingest(store, broken, edited, progress=False)
        assert _all_ids(store) == ids, "a failed run neither adds nor deletes"
        assert good.chunks_total == len(ids)


def test_a_closed_port_stops_the_ingest_with_a_clear_message(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", None, "embedding", "custom")
    with MilvusStore(tmp_path / "kb.db") as store:
        with pytest.raises(knowledge.IngestError, match="cannot reach the embedding endpoint"):
            knowledge.ingest(store, knowledge.Embedder(endpoint, dim=DIM, max_retries=0), _subset(), progress=False)
        assert store.count() == 0


def _fake_embeddings(vector_for):
    def answer(request):
        texts = request.json()["input"]
        return 200, {"object": "list", "model": "embedding",
                     "data": [{"object": "embedding", "index": i, "embedding": vector_for(i)} for i in range(len(texts))],
                     "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    return answer


@pytest.mark.parametrize(
    ("vector_for", "message"),
    [
        (lambda i: [0.1] * (DIM - 1), "383 dimensions, the index expects 384"),
        (lambda i: [0.1] * (DIM - 1) + [math.nan], "NaN or infinite"),
        (lambda i: [0.0] * DIM, "all zeros"),
    ],
    ids=["wrong-dimension", "nan", "zero"],
)
def test_a_wrong_vector_from_the_endpoint_is_refused_and_nothing_is_written(tmp_path, vector_for, message):
    with MilvusStore(tmp_path / "kb.db") as store, serve(_fake_embeddings(vector_for)) as server:
        embedder = knowledge.Embedder(Endpoint(server.url + "/v1", None, "embedding", "custom"),
                                      dim=DIM, max_retries=0)
        with pytest.raises(knowledge.IngestError, match=re.escape(message)):
            knowledge.ingest(store, embedder, _subset(), progress=False)
        assert store.count() == 0


def test_fewer_vectors_than_texts_is_refused(tmp_path):
    def short(request):
        return 200, {"object": "list", "model": "embedding", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                     "data": [{"object": "embedding", "index": 0, "embedding": [0.1] * DIM}]}

    with serve(short) as server:
        embedder = knowledge.Embedder(Endpoint(server.url + "/v1", None, "embedding", "custom"),
                                      dim=DIM, max_retries=0)
        with pytest.raises(knowledge.EmbeddingError, match="1 vectors for 2 texts"):
            embedder.embed(["a", "b"])


@pytest.mark.services
def test_a_failure_in_a_later_batch_keeps_earlier_batches_and_the_next_run_resumes(embedding_stack, tmp_path):
    real = _embedder(embedding_stack)
    seen = []

    def second_fails(request):
        seen.append(1)
        if len(seen) == 2:
            return 503, {"error": {"message": "overloaded"}}
        texts = request.json()["input"]
        return 200, {"object": "list", "model": "embedding", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                     "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                              for i, v in enumerate(real.embed(texts))]}

    docs = _subset()
    with MilvusStore(tmp_path / "kb.db") as store, serve(second_fails) as server:
        flaky = knowledge.Embedder(Endpoint(server.url + "/v1", None, "embedding", "custom"),
                                   dim=DIM, max_retries=0)
        with pytest.raises(knowledge.IngestError, match=r"(?s)batch 2 of .*4 chunk\(s\) from earlier batches"):
            knowledge.ingest(store, flaky, docs, batch_size=4, progress=False)
        assert store.count() == 4
        report = knowledge.ingest(store, real, docs, batch_size=4, progress=False)
        total = sum(len(knowledge.chunk_document(d, knowledge.token_counter())) for d in docs)
        assert report.chunks_written == total - 4 and store.count() == total


@pytest.mark.services
def test_embeddings_go_through_the_gateway_with_no_silent_fallback(embedding_stack):
    """The target's embedding route is the gateway's; with the gateway down, embedding fails and names it, even
    though the embedding server is up (nothing falls back to it behind the caller's back)."""
    settings = embedding_stack
    endpoint = Target("local", settings).gateway_embeddings
    assert endpoint.via.startswith("gateway") and endpoint.base_url == f"http://127.0.0.1:{settings.gateway_port}/v1"
    assert endpoint.model == settings.served_embedding_model
    assert endpoint.api_key is not None and endpoint.key() not in endpoint.describe(), "the key is masked"
    assert stack.service_status("embedding-server").state == "healthy"
    with pytest.raises(knowledge.EmbeddingError, match=re.escape("cannot reach the embedding endpoint (gateway")):
        knowledge.Embedder(endpoint, dim=DIM, max_retries=0).embed(["Why is my GPU pod stuck in Pending?"])
    assert get_spec(settings.embedding_model).dimension == DIM


def test_extra_body_fields_go_with_every_embedding_request() -> None:
    import httpx

    from helpers.layers.gateway.timing import NO_CACHE
    from helpers.target import Endpoint

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"object": "list", "model": "embedding", "data": [
            {"object": "embedding", "index": 0, "embedding": [1.0] + [0.0] * 383}]})

    embedder = knowledge.Embedder(Endpoint("http://gateway/v1", None, "embedding", "test"), dim=384,
                                  extra_body=NO_CACHE)
    embedder._client._client = httpx.Client(transport=httpx.MockTransport(handler))  # the test's transport only
    embedder.embed(["a question"])
    assert seen[0]["cache"] == NO_CACHE["cache"] and seen[0]["input"] == ["a question"]
