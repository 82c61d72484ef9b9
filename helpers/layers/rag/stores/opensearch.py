"""Amazon OpenSearch Service k-NN behind the VectorStore interface (the `eks` target's vector store).

OpenSearch runs only in `eks`: no OpenSearch server with the k-NN plugin can be installed on the workshop
laptop, so locally this module is exercised offline. `DryRunDomain` is a transport stub for opensearch-py that
records every request the client would send (index mapping, bulk writes with ids, k-NN queries with a
filter) and answers like an empty domain; the notebook shows those requests as the eks plan, and the tests
check them. Against a real domain, `OpenSearchStore.from_endpoint()` signs every request with SigV4 using
credentials from the boto3 credential chain (in the agent's pod: EKS Pod Identity).

The index mapping, field by field (see `index_body`):
- `knn_vector` with `dimension` = the embedding model's output length (384 for all-MiniLM-L6-v2). Fixed at
  creation: a different model means a new index.
- `method.name: hnsw`: Hierarchical Navigable Small World, a layered proximity graph searched greedily from
  the top layer down. Approximate: it may miss a true neighbour, which is why the notebook measures recall.
- `engine: faiss`: the library that builds and searches the graph (in native memory, outside the JVM heap).
  `lucene` is the alternative; `nmslib` is deprecated. Faiss supports `cosinesimil` from OpenSearch 2.19.
- `space_type: cosinesimil`: distance = 1 - cos(query, chunk); OpenSearch's score = (2 - distance) / 2,
  i.e. (1 + cos) / 2 in [0, 1]. `OpenSearchStore` converts it back to the cosine for `Hit.score`.
- `parameters.m`: links per node per layer. More links: better recall on hard data, more memory
  (roughly m * 2 * 4 bytes per vector on top of the vector itself) and slower indexing. Default 16.
- `parameters.ef_construction`: how many candidates the builder keeps while wiring a new node. Larger
  builds a better-connected graph (higher recall for the same ef_search) at a slower indexing speed.
  Default 100; the workshop uses 128. Fixed at creation.
- `parameters.ef_search`: how many candidates a query keeps while walking the graph (at least k). The
  recall/latency knob: larger is more accurate and slower. Default 100; can be overridden per query with
  `method_parameters.ef_search` (OpenSearch 2.16+), which `search(..., ef_search=N)` does.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np
from opensearchpy import Connection

from helpers.layers.rag.stores.base import (
    Chunk,
    Filter,
    Hit,
    VectorStore,
    VectorStoreError,
    check_chunks,
    check_filter,
    check_vector,
    unit,
)

INDEX = "knowledge"
VECTOR_FIELD = "embedding"
MAX_RESULTS = 10_000  # index.max_result_window: the most hits one search may return
SIGV4_SERVICE = "es"  # Amazon OpenSearch Service domains sign as "es" ("aoss" is OpenSearch Serverless)
SOURCE_FIELDS = ["source", "title", "category", "tags", "position", "text"]


@dataclass(frozen=True)
class OpenSearchHnsw:
    """Every choice of the k-NN field, with the reason for each value (the module docstring explains them)."""

    engine: str = "faiss"  # the graph library; faiss supports efficient filtering and cosinesimil (2.19+)
    space_type: str = "cosinesimil"  # cosine distance, the metric the embedding model was trained for
    m: int = 16  # graph links per node: recall vs memory
    ef_construction: int = 128  # build-time candidate list: graph quality vs indexing speed
    ef_search: int = 100  # query-time candidate list: recall vs latency (overridable per query)


def index_body(dim: int, hnsw: OpenSearchHnsw = OpenSearchHnsw(), shards: int = 1, replicas: int = 0) -> dict[str, Any]:
    """The create-index request: k-NN on, one HNSW vector field, and keyword metadata for filters."""
    if dim < 1:
        raise ValueError("dimension must be positive")
    return {
        "settings": {
            "index": {
                "knn": True,  # build k-NN graphs for knn_vector fields of this index
                "number_of_shards": shards,  # one shard: a few thousand chunks fit easily
                "number_of_replicas": replicas,  # 0 on a one-node domain; 1 with two data nodes in two AZs
            }
        },
        "mappings": {
            "dynamic": "strict",  # a misspelled field is an error, not a silently added one
            "properties": {
                VECTOR_FIELD: {
                    "type": "knn_vector",
                    "dimension": dim,
                    "method": {
                        "name": "hnsw",
                        "engine": hnsw.engine,
                        "space_type": hnsw.space_type,
                        "parameters": {"m": hnsw.m, "ef_construction": hnsw.ef_construction,
                                       "ef_search": hnsw.ef_search},
                    },
                },
                "text": {"type": "text"},  # the chunk, also searchable by keywords
                "source": {"type": "keyword"},  # exact-match fields: what filters use
                "title": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
                "category": {"type": "keyword"},
                "tags": {"type": "keyword"},  # an array of keywords: a term filter matches any element
                "position": {"type": "integer"},
                "n_tokens": {"type": "integer"},
            },
        },
    }


def filter_clause(filter: Filter | None) -> dict[str, Any] | None:
    """A metadata filter as an OpenSearch bool/term query (None when there is no filter)."""
    terms = []
    for key, value in check_filter(filter).items():
        terms.append({"term": {("title.keyword" if key == "title" else key): value}})
    return {"bool": {"filter": terms}} if terms else None


def knn_query(vector: Sequence[float], k: int, filter: Filter | None = None, ef_search: int | None = None
              ) -> dict[str, Any]:
    """The search request: k nearest chunks, filtered during the graph walk (efficient filtering)."""
    knn: dict[str, Any] = {"vector": [float(x) for x in vector], "k": k}
    if (clause := filter_clause(filter)) is not None:
        knn["filter"] = clause  # inside the knn clause: filtered while searching, so k results still come back
    if ef_search is not None:
        knn["method_parameters"] = {"ef_search": max(ef_search, k)}
    return {"size": k, "_source": SOURCE_FIELDS, "query": {"knn": {VECTOR_FIELD: knn}}}


def bulk_body(index: str, chunks: Sequence[Chunk]) -> list[dict[str, Any]]:
    """Bulk `index` actions with explicit ids: writing a chunk twice replaces it instead of duplicating it."""
    lines: list[dict[str, Any]] = []
    for c in chunks:
        lines.append({"index": {"_index": index, "_id": c.id}})
        lines.append({VECTOR_FIELD: unit(c.vector).tolist(), **c.metadata()})
    return lines


def delete_body(index: str, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Bulk `delete` actions by id."""
    return [{"delete": {"_index": index, "_id": i}} for i in ids]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class OpenSearchStore(VectorStore):
    """Chunks in an OpenSearch index with an HNSW knn_vector field."""

    backend = "opensearch"

    def __init__(self, client: Any, index: str = INDEX, hnsw: OpenSearchHnsw = OpenSearchHnsw(),
                 replicas: int = 0) -> None:
        self.client = client
        self.index = index
        self.hnsw = hnsw
        self.replicas = replicas
        self.dim: int | None = None

    @classmethod
    def from_endpoint(cls, endpoint: str, region: str, index: str = INDEX, credentials: Any = None,
                      **kwargs: Any) -> OpenSearchStore:
        """A store on a domain endpoint, every request SigV4-signed with the boto3 credential chain's credentials."""
        import boto3
        from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        host = parsed.hostname or ""
        if parsed.scheme != "https" and not _is_loopback(host):
            raise VectorStoreError(f"{endpoint}: OpenSearch domains enforce HTTPS; use the https:// endpoint")
        if credentials is None:
            credentials = boto3.Session().get_credentials()  # env, profile, SSO, Pod Identity, instance role ...
        if credentials is None:
            raise VectorStoreError(
                "No AWS credentials to sign OpenSearch requests with. In the agent's pod, EKS Pod Identity "
                "provides them (see the PodIdentityAssociation in opensearch-domain.yaml); on a laptop, run "
                "`aws configure` or `aws sso login`."
            )
        client = OpenSearch(
            hosts=[{"host": host, "port": parsed.port or (443 if parsed.scheme == "https" else 80)}],
            http_auth=AWSV4SignerAuth(credentials, region, SIGV4_SERVICE),  # refreshes expiring credentials
            use_ssl=parsed.scheme == "https",
            verify_certs=parsed.scheme == "https",
            connection_class=RequestsHttpConnection,
            timeout=30,
            max_retries=2,
            retry_on_timeout=True,
        )
        return cls(client, index=index, **kwargs)

    # ------------------------------------------------------------ index

    def _mapped_dim(self) -> int | None:
        mapping = self.client.indices.get_mapping(index=self.index)
        props = next(iter(mapping.values()))["mappings"].get("properties", {})
        field = props.get(VECTOR_FIELD) or {}
        return int(field["dimension"]) if "dimension" in field else None

    def ensure_collection(self, dim: int) -> bool:
        """Create the index with the k-NN mapping if missing; refuse an index built for another dimension."""
        if self.client.indices.exists(index=self.index):
            existing = self._mapped_dim()
            if existing != dim:
                raise VectorStoreError(
                    f"index {self.index} maps {existing}-d vectors, the embedding model makes {dim}-d ones: "
                    "delete the index (store.drop()) and ingest again"
                )
            self.dim = dim
            return False
        self.client.indices.create(index=self.index, body=index_body(dim, self.hnsw, replicas=self.replicas))
        self.dim = dim
        return True

    def _require_dim(self) -> int:
        if self.dim is None:
            raise VectorStoreError(f"index {self.index} is not set up yet: call ensure_collection(dim)")
        return self.dim

    # ------------------------------------------------------------ writes

    def _bulk(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        answer = self.client.bulk(body=lines)
        if answer.get("errors"):
            failed = [item for item in answer.get("items", []) for action in item.values()
                      if action.get("status", 200) >= 300 and action.get("status") != 404]
            if failed:
                first = next(iter(failed[0].values()))
                raise VectorStoreError(f"{len(failed)} bulk action(s) failed; first: {first.get('error')}")

    def upsert(self, chunks: Sequence[Chunk]) -> int:
        """Index chunks under their ids (an existing id is replaced)."""
        checked = check_chunks(chunks, self._require_dim())
        self._bulk(bulk_body(self.index, checked))
        return len(checked)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete chunks by id (an id that is already gone is not an error)."""
        ids = list(ids)
        self._bulk(delete_body(self.index, ids))
        return len(ids)

    def refresh(self) -> None:
        """Make the writes searchable now (instead of within the 1 s refresh interval)."""
        self.client.indices.refresh(index=self.index)

    def drop(self) -> None:
        """Delete the index."""
        self.client.indices.delete(index=self.index, ignore=[404])
        self.dim = None

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    # ------------------------------------------------------------ reads

    def search(
        self, vector: Sequence[float] | np.ndarray, k: int = 5, filter: Filter | None = None,
        ef_search: int | None = None,
    ) -> list[Hit]:
        """The k nearest chunks (HNSW, cosine), optionally filtered on metadata."""
        query = unit(check_vector(vector, self._require_dim()))
        if k < 1:
            raise ValueError("k must be at least 1")
        answer = self.client.search(index=self.index, body=knn_query(query.tolist(), k, filter, ef_search))
        hits = []
        for h in answer["hits"]["hits"]:
            s = h["_source"]
            raw = float(h["_score"])
            hits.append(Hit(id=h["_id"], score=2 * raw - 1, raw_score=raw, source=s["source"], title=s["title"],
                            category=s["category"], tags=tuple(s.get("tags") or ()), position=int(s["position"]),
                            text=s["text"]))
        return hits

    def ids_for_source(self, source: str) -> set[str]:
        """The ids of every chunk of one document."""
        body = {"size": MAX_RESULTS, "_source": False, "query": {"term": {"source": source}}}
        return {h["_id"] for h in self.client.search(index=self.index, body=body)["hits"]["hits"]}

    def sources(self) -> set[str]:
        """Every document path in the index (a terms aggregation)."""
        body = {"size": 0, "aggs": {"sources": {"terms": {"field": "source", "size": MAX_RESULTS}}}}
        answer = self.client.search(index=self.index, body=body)
        return {b["key"] for b in answer.get("aggregations", {}).get("sources", {}).get("buckets", [])}

    def count(self) -> int:
        """How many chunks the index holds."""
        return int(self.client.count(index=self.index)["count"])

    def export_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every id and its stored vector (up to 10,000 chunks)."""
        if self.count() > MAX_RESULTS:
            raise VectorStoreError("more than 10,000 chunks: export with the scroll API instead")
        body = {"size": MAX_RESULTS, "_source": [VECTOR_FIELD], "query": {"match_all": {}}}
        hits = self.client.search(index=self.index, body=body)["hits"]["hits"]
        ids = [h["_id"] for h in hits]
        return ids, np.asarray([h["_source"][VECTOR_FIELD] for h in hits], dtype=np.float32).reshape(
            len(hits), self.dim or 0)


# ---------------------------------------------------------------- offline: the transport stub


@dataclass
class RecordedRequest:
    """One HTTP request opensearch-py would have sent."""

    method: str
    url: str
    params: dict[str, Any]
    body: Any  # parsed JSON, or a list of parsed lines for NDJSON (bulk)
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The request as plain data."""
        return asdict(self)


def _parse_body(body: Any) -> Any:
    if body is None:
        return None
    text = body.decode() if isinstance(body, bytes) else str(body)
    if text.endswith("\n"):  # NDJSON (bulk): opensearch-py ends every line, the last one included, with \n
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def shorten_vectors(body: Any, keep: int = 3) -> Any:
    """A request body with every vector cut to its first `keep` numbers (and a count of the rest), for display."""
    if isinstance(body, list):
        return [shorten_vectors(b, keep) for b in body]
    if isinstance(body, dict):
        return {k: (v[:keep] + [f"... {len(v) - keep} more"] if k in ("vector", VECTOR_FIELD) and isinstance(v, list)
                    else shorten_vectors(v, keep)) for k, v in body.items()}
    return body


class DryRunDomain:
    """Records what an OpenSearchStore sends; answers like an empty domain. Nothing leaves the machine."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.indices: dict[str, dict[str, Any]] = {}

    def answer(self, request: RecordedRequest) -> tuple[int, Any]:
        """The status and JSON body an empty domain would return."""
        path = request.url.strip("/").split("/")
        index = path[0] if path and not path[0].startswith("_") else None
        if request.method == "HEAD" and index:
            return (200 if index in self.indices else 404), None
        if request.method == "PUT" and index and len(path) == 1:
            self.indices[index] = request.body or {}
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}
        if request.method == "GET" and index and path[-1] == "_mapping":
            return 200, {index: {"mappings": self.indices.get(index, {}).get("mappings", {})}}
        if path and path[-1] == "_bulk":
            actions = [line for line in request.body or [] if len(line) == 1 and next(iter(line)) in
                       ("index", "delete", "create", "update")]
            items = [{name: {"_index": a[name]["_index"], "_id": a[name]["_id"],
                             "status": 201 if name == "index" else 404}} for a in actions for name in a]
            return 200, {"took": 0, "errors": False, "items": items}
        if path and path[-1] == "_search":
            return 200, {"took": 0, "timed_out": False, "hits": {"total": {"value": 0, "relation": "eq"},
                                                                 "max_score": None, "hits": []},
                         "aggregations": {"sources": {"buckets": []}}}
        if path and path[-1] == "_count":
            return 200, {"count": 0}
        if path and path[-1] == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if request.method == "DELETE" and index:
            self.indices.pop(index, None)
            return 200, {"acknowledged": True}
        return 200, {}

    def client(self) -> Any:
        """An opensearch-py client whose transport records into this dry run."""
        from opensearchpy import OpenSearch

        return OpenSearch(hosts=[{"host": "dry-run.invalid", "port": 443}], use_ssl=True,
                          connection_class=RecordingConnection, dry_run=self)

    def store(self, index: str = INDEX, **kwargs: Any) -> OpenSearchStore:
        """An OpenSearchStore on this dry run."""
        return OpenSearchStore(self.client(), index=index, **kwargs)

    def calls(self, predicate: Callable[[RecordedRequest], bool] | None = None) -> list[RecordedRequest]:
        """The recorded requests (optionally only those matching)."""
        return [r for r in self.requests if predicate is None or predicate(r)]


class RecordingConnection(Connection):
    """An opensearch-py connection that records requests into a DryRunDomain instead of sending them."""

    def __init__(self, *args: Any, dry_run: DryRunDomain, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dry_run = dry_run

    def perform_request(self, method: str, url: str, params: Any = None, body: Any = None,
                        timeout: Any = None, ignore: Any = (), headers: Any = None) -> tuple[int, dict, str]:
        """Record the request and return the dry run's answer (raising on an error status, like a real one)."""
        request = RecordedRequest(method=method, url=url, params=dict(params or {}), body=_parse_body(body),
                                  headers=dict(headers or {}))
        self.dry_run.requests.append(request)
        status, data = self.dry_run.answer(request)
        raw = json.dumps(data) if data is not None else ""
        if not (200 <= status < 300) and status not in (ignore or ()) and method != "HEAD":
            self._raise_error(status, raw)
        return status, {"content-type": "application/json"}, raw
