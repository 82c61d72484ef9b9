"""The vector-store interface and its backends: Milvus Lite for real, OpenSearch offline (its requests recorded).

OpenSearch k-NN cannot run on this machine, so the OpenSearch backend is checked on the requests opensearch-py
would send (index mapping, bulk writes with ids, k-NN queries with a filter), through a transport stub that
records them, and on its SigV4 signature against a real loopback HTTP server. The CloudFormation template of
the domain is linted with cfn-lint and its access policy checked.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.infra import manifests
from helpers.layers.rag.stores import (
    Chunk,
    InvalidVector,
    VectorStoreError,
    check_filter,
    check_vector,
    exact_top_k,
    open_store,
    recall_at_k,
)
from helpers.layers.rag import deploy as domain
from helpers.layers.rag.stores.milvus import MilvusHnsw, MilvusStore, milvus_filter
from helpers.layers.rag.stores.opensearch import DryRunDomain, OpenSearchHnsw, OpenSearchStore, index_body, knn_query
from tests.local_http import serve

DIM = 16
ROOT = Path(__file__).resolve().parents[1]


def random_chunks(n: int, dim: int = DIM, seed: int = 0, source_count: int = 5) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    chunks = []
    for i in range(n):
        category = ("components", "concepts", "troubleshooting")[i % 3]
        tags = ("gpu", "vllm") if i % 2 else ("storage",)
        chunks.append(Chunk(id=f"{i:064x}", source=f"{category}/doc{i % source_count}.md", title=f"Doc {i % source_count}",
                            category=category, tags=tags, position=i // source_count, text=f"chunk number {i}",
                            n_tokens=10, vector=rng.normal(size=dim)))
    return chunks


# ---------------------------------------------------------------- checks shared by every backend


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([0.1] * (DIM + 1), "17 dimensions, the index expects 16"),
        ([0.1] * (DIM - 1) + [float("nan")], "NaN or infinite"),
        ([0.1] * (DIM - 1) + [float("inf")], "NaN or infinite"),
        ([0.0] * DIM, "all zeros"),
        (["a"] * DIM, "not a vector of numbers"),
        ([[0.1] * DIM], "dimensions"),
    ],
    ids=["too-long", "nan", "inf", "zero", "strings", "matrix"],
)
def test_bad_vectors_are_refused(vector, message):
    with pytest.raises(InvalidVector, match=message):
        check_vector(vector, DIM)


def test_filters_only_on_known_fields_and_plain_values():
    assert check_filter({"category": "troubleshooting", "tags": "gpu"}) == {"category": "troubleshooting", "tags": "gpu"}
    assert check_filter(None) == {}
    with pytest.raises(ValueError, match="cannot filter on 'text'"):
        check_filter({"text": "x"})
    with pytest.raises(ValueError, match="without quotes"):
        check_filter({"source": 'x" or id != "'})
    assert milvus_filter({"category": "concepts", "tags": "gpu"}) == \
        'category == "concepts" and ARRAY_CONTAINS(tags, "gpu")'


def test_exact_top_k_is_brute_force_cosine():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, DIM))
    query = rng.normal(size=DIM)
    order, sims = exact_top_k(vectors, query, 5)
    expected = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    assert list(order) == list(np.argsort(-expected)[:5])
    assert np.allclose(sims, np.sort(expected)[::-1][:5], atol=1e-5)


# ---------------------------------------------------------------- Milvus Lite, for real


def test_milvus_store_writes_searches_filters_and_deletes(tmp_path):
    chunks = random_chunks(60)
    with MilvusStore(tmp_path / "kb.db") as store:
        assert store.ensure_collection(DIM) is True
        assert store.ensure_collection(DIM) is False
        assert store.upsert(chunks) == 60
        store.upsert(chunks[:10])  # same ids again: replaced, not duplicated
        store.refresh()
        assert store.count() == 60
        assert store.sources() == {c.source for c in chunks}
        assert store.ids_for_source(chunks[0].source) == {c.id for c in chunks if c.source == chunks[0].source}

        hits = store.search(chunks[7].vector, k=5)
        assert hits[0].id == chunks[7].id and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].text == "chunk number 7" and hits[0].tags == chunks[7].tags

        filtered = store.search(chunks[7].vector, k=5, filter={"category": "concepts", "tags": "storage"})
        assert filtered and all(h.category == "concepts" and "storage" in h.tags for h in filtered)

        ids, vectors = store.export_vectors()
        assert sorted(ids) == sorted(c.id for c in chunks) and vectors.shape == (60, DIM)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5), "stored as unit vectors"

        assert store.delete([c.id for c in chunks[:20]]) == 20
        store.refresh()
        assert store.count() == 40 and chunks[0].id not in {h.id for h in store.search(chunks[0].vector, k=40)}

    with MilvusStore(tmp_path / "kb.db") as reopened:
        assert reopened.dim == DIM and reopened.count() == 40, "the data survives closing the file"


def test_milvus_store_refuses_bad_vectors_and_a_collection_of_another_dimension(tmp_path):
    chunks = random_chunks(3)
    with MilvusStore(tmp_path / "kb.db") as store:
        with pytest.raises(VectorStoreError, match="ensure_collection"):
            store.search(chunks[0].vector)
        store.ensure_collection(DIM)
        bad = copy.copy(chunks[2])
        bad.vector = np.full(DIM, np.nan)
        with pytest.raises(InvalidVector, match="NaN"):
            store.upsert([chunks[0], chunks[1], bad])
        assert store.count() == 0, "one bad vector and the whole write is refused"
        short = copy.copy(chunks[0])
        short.vector = np.ones(DIM - 1)
        with pytest.raises(InvalidVector, match="15 dimensions"):
            store.upsert([short])
        with pytest.raises(InvalidVector):
            store.search(np.zeros(DIM))
        with pytest.raises(VectorStoreError, match="holds 16-d vectors"):
            store.ensure_collection(DIM * 2)


def test_a_milvus_lite_file_open_in_another_process_gives_a_clear_error(tmp_path):
    path = tmp_path / "kb.db"
    with MilvusStore(path) as store:
        store.ensure_collection(DIM)
        code = ("import sys\nfrom helpers.layers.rag.stores.milvus import MilvusStore\nfrom helpers.layers.rag.stores import "
                "VectorStoreError\ntry:\n    MilvusStore(sys.argv[1])\nexcept VectorStoreError as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                             timeout=120)
        assert "Only one process at a time" in out.stdout
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom helpers.layers.rag.stores.milvus import MilvusStore\n"
                          "print(MilvusStore(sys.argv[1]).dim)", str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.stdout.strip() == str(DIM), "close() released the file"


def test_recall_at_k_is_one_for_a_good_index_and_shows_a_weak_one(tmp_path):
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(20, DIM))
    good_chunks = random_chunks(300, seed=4)
    with MilvusStore(tmp_path / "good.db") as store:
        store.ensure_collection(DIM)
        store.upsert(good_chunks)
        store.refresh()
        report = recall_at_k(store, queries, k=5)
        assert report.recall == 1.0 and report.n_queries == 20 and report.n_vectors == 300

    dim = 48
    weak = MilvusHnsw(M=4, efConstruction=8, ef=8)
    many = random_chunks(3000, dim=dim, seed=5)
    with MilvusStore(tmp_path / "weak.db", hnsw=weak) as store:
        store.ensure_collection(dim)
        store.upsert(many)
        store.refresh()
        assert store.index_description()["index_type"] == "HNSW"
        low = recall_at_k(store, rng.normal(size=(30, dim)), k=5, ef_search=5)
        high = recall_at_k(store, rng.normal(size=(30, dim)), k=5, ef_search=400)
        assert low.recall < 0.95, "a tiny graph searched with ef=5 misses neighbours: the index is approximate"
        assert high.recall > low.recall


def test_open_store_picks_the_backend(tmp_path):
    with open_store("milvus", uri=tmp_path / "kb.db") as store:
        assert isinstance(store, MilvusStore)
    with pytest.raises(ValueError, match="unknown vector store backend"):
        open_store("pinecone")


# ---------------------------------------------------------------- OpenSearch, offline


def test_opensearch_index_mapping_sets_every_hnsw_parameter():
    dry = DryRunDomain()
    store = dry.store(hnsw=OpenSearchHnsw(m=24, ef_construction=200, ef_search=120), replicas=1)
    assert store.ensure_collection(384) is True
    head, put = dry.requests
    assert (head.method, head.url) == ("HEAD", "/knowledge")
    assert (put.method, put.url) == ("PUT", "/knowledge")
    assert put.body["settings"]["index"] == {"knn": True, "number_of_shards": 1, "number_of_replicas": 1}
    vector = put.body["mappings"]["properties"]["embedding"]
    assert vector == {"type": "knn_vector", "dimension": 384,
                      "method": {"name": "hnsw", "engine": "faiss", "space_type": "cosinesimil",
                                 "parameters": {"m": 24, "ef_construction": 200, "ef_search": 120}}}
    props = put.body["mappings"]["properties"]
    assert {k: props[k]["type"] for k in ("source", "category", "tags")} == dict.fromkeys(
        ("source", "category", "tags"), "keyword")
    assert put.body["mappings"]["dynamic"] == "strict"
    assert put.body == index_body(384, OpenSearchHnsw(m=24, ef_construction=200, ef_search=120), replicas=1)

    assert store.ensure_collection(384) is False, "an existing index is kept"
    with pytest.raises(VectorStoreError, match="maps 384-d vectors"):
        store.ensure_collection(768)


def test_opensearch_bulk_writes_use_explicit_ids_and_unit_vectors():
    dry = DryRunDomain()
    store = dry.store()
    store.ensure_collection(DIM)
    chunks = random_chunks(3)
    store.upsert(chunks)
    store.delete([chunks[0].id])
    write, delete = dry.calls(lambda r: r.url == "/_bulk")
    actions, docs = write.body[0::2], write.body[1::2]
    assert actions == [{"index": {"_index": "knowledge", "_id": c.id}} for c in chunks]
    for doc, chunk in zip(docs, chunks):
        assert np.linalg.norm(doc["embedding"]) == pytest.approx(1.0)
        assert {k: doc[k] for k in ("source", "category", "tags", "text")} == {
            "source": chunk.source, "category": chunk.category, "tags": list(chunk.tags), "text": chunk.text}
    assert delete.body == [{"delete": {"_index": "knowledge", "_id": chunks[0].id}}]
    bad = copy.copy(chunks[1])
    bad.vector = np.zeros(DIM)
    before = len(dry.requests)
    with pytest.raises(InvalidVector):
        store.upsert([chunks[0], bad])
    assert len(dry.requests) == before, "a bad vector is refused before any request is sent"


def test_opensearch_knn_query_carries_k_the_filter_and_ef_search():
    dry = DryRunDomain()
    store = dry.store()
    store.ensure_collection(DIM)
    assert store.search(np.ones(DIM), k=4, filter={"category": "troubleshooting", "tags": "gpu"}, ef_search=64) == []
    search = dry.calls(lambda r: r.url == "/knowledge/_search")[-1]
    knn = search.body["query"]["knn"]["embedding"]
    assert search.body["size"] == knn["k"] == 4
    assert np.linalg.norm(knn["vector"]) == pytest.approx(1.0) and len(knn["vector"]) == DIM
    assert knn["filter"] == {"bool": {"filter": [{"term": {"category": "troubleshooting"}}, {"term": {"tags": "gpu"}}]}}
    assert knn["method_parameters"] == {"ef_search": 64}
    assert "embedding" not in search.body["_source"], "vectors are not sent back with hits"
    assert "filter" not in knn_query([1.0] * DIM, 3)["query"]["knn"]["embedding"]
    with pytest.raises(ValueError, match="cannot filter on"):
        store.search(np.ones(DIM), filter={"vector": "x"})


def test_opensearch_hits_become_cosine_scores_and_bulk_errors_raise():
    class Answering(DryRunDomain):
        def answer(self, request):
            if request.url.endswith("/_search"):
                return 200, {"hits": {"hits": [{"_id": "a", "_score": 0.9, "_source": {
                    "source": "s.md", "title": "T", "category": "concepts", "tags": ["x"], "position": 0, "text": "t"}}]}}
            if request.url == "/_bulk":
                return 200, {"errors": True, "items": [{"index": {"_id": "a", "status": 400,
                                                                  "error": {"type": "mapper_parsing_exception"}}}]}
            return super().answer(request)

    dry = Answering()
    store = dry.store()
    store.ensure_collection(DIM)
    hit = store.search(np.ones(DIM), k=1)[0]
    assert hit.raw_score == 0.9 and hit.score == pytest.approx(0.8), "cosinesimil score (1 + cos) / 2 -> cos"
    with pytest.raises(VectorStoreError, match="mapper_parsing_exception"):
        store.upsert(random_chunks(1))


def test_opensearch_requests_are_sigv4_signed_with_credentials_from_the_chain(monkeypatch):
    from botocore.credentials import Credentials

    def ok(request):
        if request.method == "HEAD":
            return 404, None
        return 200, {"acknowledged": True}

    with serve(ok) as server:
        creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "a-session-token")
        store = OpenSearchStore.from_endpoint(server.url, "eu-west-1", credentials=creds)
        store.ensure_collection(DIM)
        store.close()
        assert [(r.method, r.path) for r in server.requests] == [("HEAD", "/knowledge"), ("PUT", "/knowledge")]
        for r in server.requests:
            auth = r.headers["Authorization"]
            assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            assert "/eu-west-1/es/aws4_request" in auth and "Signature=" in auth
            assert r.headers["X-Amz-Security-Token"] == "a-session-token"

        # no credentials anywhere in the chain: a clear error, not an unsigned request
        monkeypatch.setattr("boto3.Session.get_credentials", lambda self: None)
        with pytest.raises(VectorStoreError, match="No AWS credentials"):
            OpenSearchStore.from_endpoint(server.url, "eu-west-1")
    with pytest.raises(VectorStoreError, match="enforce HTTPS"):
        OpenSearchStore.from_endpoint("http://search-x.eu-west-1.es.amazonaws.com", "eu-west-1", credentials=creds)


# ---------------------------------------------------------------- the domain template and the Milvus manifests


def test_the_domain_template_passes_cfn_lint():
    exe = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run([str(exe), str(domain.TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert domain.lint().ok


def test_cfn_lint_fails_a_broken_template(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(domain.template_text().replace("EnforceHTTPS: true", "EnforceHTTPS: true\n        EnforceHttp: x"))
    result = domain.lint(broken)
    assert not result.ok and any("EnforceHttp" in f.get("Message", "") for f in result.findings)


def test_the_access_policy_grants_only_the_agent_role_and_no_wildcard():
    template = domain.load_template()
    policy = template["Resources"]["Domain"]["Properties"]["AccessPolicies"]
    for statement in policy["Statement"]:
        assert statement["Principal"] != "*"
        assert statement["Principal"] == {"AWS": {"Fn::GetAtt": ["AgentRole", "Arn"]}}
        assert "Condition" not in statement and statement["Effect"] == "Allow"
        assert all("*" not in action for action in statement["Action"])
    assert "0.0.0.0/0" not in domain.template_text() and "::/0" not in domain.template_text()
    checks = domain.security_checks(template)
    assert [c.check for c in checks if not c.ok] == []
    assert len(checks) >= 10


@pytest.mark.parametrize(
    ("mutate", "failing"),
    [
        (lambda p: p["AccessPolicies"]["Statement"][0].update(Principal="*"), "access policy: no '*' principal"),
        (lambda p: p["AccessPolicies"]["Statement"][0].update(Principal={"AWS": "*"}),
         "access policy: no '*' principal"),
        (lambda p: p["AccessPolicies"]["Statement"][0].update(
            Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}), "no 0.0.0.0/0 or ::/0 anywhere"),
        (lambda p: p["EncryptionAtRestOptions"].update(Enabled=False), "encryption at rest"),
        (lambda p: p["NodeToNodeEncryptionOptions"].update(Enabled=False), "node-to-node encryption"),
        (lambda p: p["DomainEndpointOptions"].update(TLSSecurityPolicy="Policy-Min-TLS-1-0-2019-07"),
         "HTTPS enforced with TLS 1.2 or newer"),
        (lambda p: p["AdvancedSecurityOptions"].update(InternalUserDatabaseEnabled=True),
         "fine-grained access control, IAM identities only"),
        (lambda p: p.pop("VPCOptions"), "in a VPC (no public endpoint)"),
    ],
    ids=["star", "aws-star", "open-cidr", "no-rest-encryption", "no-node-encryption", "tls-1.0", "internal-users",
         "public"],
)
def test_the_security_checks_catch_each_mistake(mutate, failing):
    template = domain.load_template()
    mutate(template["Resources"]["Domain"]["Properties"])
    assert failing in [c.check for c in domain.security_checks(template) if not c.ok]


def test_the_stack_plan_names_this_cluster_and_needs_iam_capability(isolated_settings):
    params = domain.stack_parameters("vpc-1", ["subnet-a", "subnet-b"], "sg-1", isolated_settings)
    request = domain.create_stack_request(params, isolated_settings)
    assert request["StackName"] == f"{isolated_settings.cluster_name}-knowledge-opensearch"
    assert request["Capabilities"] == ["CAPABILITY_IAM"] and request["OnFailure"] == "DELETE"
    values = {p["ParameterKey"]: p["ParameterValue"] for p in params}
    declared = set(domain.load_template()["Parameters"])
    assert set(values) <= declared and values["ServiceAccountName"] == "supervisor-agent"
    assert values["SubnetIds"] == "subnet-a,subnet-b"


def test_milvus_standalone_manifests_pass_the_checks_with_pinned_image_probes_and_gp3():
    for target in manifests.TARGETS:
        docs = manifests.render_chapter("06-vector-index", target=target, include_on_demand=True)
        assert manifests.check(docs) == []
        assert manifests.render_chapter("06-vector-index", target=target) == [], "Milvus is on demand only"
    sts = next(m.doc for m in docs if m.kind == "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert manifests.image_tag(container["image"]) not in (None, "latest")
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "gp3"
    service = next(m.doc for m in docs if m.kind == "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert any(m.kind == "NetworkPolicy" for m in docs)
