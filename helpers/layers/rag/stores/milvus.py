"""Milvus behind the VectorStore interface: Milvus Lite on a local file (the default) or a Milvus server by URI.

Milvus Lite (the `milvus-lite` package) runs inside this Python process: `MilvusClient("x.db")` opens a folder
of Parquet segments and starts a small gRPC server on a loopback port in a background thread. The same client
code talks to Milvus standalone in the cluster (`manifests/06-vector-index/on-demand/milvus-standalone.yaml.j2`) with
`uri="http://milvus.<namespace>.svc:19530"`.

Two things about Milvus Lite worth knowing:
- New rows sit in an in-memory table that is searched exhaustively; `refresh()` flushes them into a segment,
  which builds that segment's HNSW graph (FAISS), and reloads the collection so searches use it.
- One process at a time may open a Milvus Lite file. A second process (another notebook kernel, the agent
  API, a test) gets a clear VectorStoreError; `close()` releases the file.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.config import Settings, get_settings
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

# gRPC's C core logs keep-alive chatter ("too_many_pings") from Milvus Lite's loopback channel straight to
# stderr; errors still reach Python as exceptions. Only applies if grpc has not been imported yet.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

COLLECTION = "knowledge"
MAX_TEXT = 16_384  # characters of chunk text a row may hold (chunks are ~1,500)
MAX_TAGS = 16
PAGE = 1_000  # rows per query page (Milvus caps offset + limit at 16,384 per query)
OUTPUT_FIELDS = ["source", "title", "category", "tags", "position", "text"]


@dataclass(frozen=True)
class MilvusHnsw:
    """The HNSW parameters of the Milvus index (same meaning as OpenSearch's; see helpers.layers.rag.stores.opensearch)."""

    M: int = 16  # links per node in the graph: more = better recall, more memory
    efConstruction: int = 200  # candidates considered while inserting a node: more = better graph, slower build
    ef: int = 64  # candidates kept while searching (at least k): more = better recall, slower search


def default_path(settings: Settings | None = None) -> Path:
    """Where the local knowledge base lives: a Milvus Lite folder in the git-ignored state folder."""
    settings = settings or get_settings()
    return settings.state_dir / "vectors" / "knowledge.db"


def _is_local(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "unix:")) and uri.endswith(".db")


class MilvusStore(VectorStore):
    """Chunks in a Milvus collection with an HNSW (cosine) index on the vectors."""

    backend = "milvus"

    def __init__(
        self,
        uri: str | Path | None = None,
        collection: str = COLLECTION,
        token: str | None = None,
        hnsw: MilvusHnsw = MilvusHnsw(),
    ) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self.uri = str(uri or default_path())
        self.collection = collection
        self.hnsw = hnsw
        self.local = _is_local(self.uri)
        if self.local:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MilvusClient(uri=self.uri, token=token or "")
        except MilvusException as exc:
            if self.local:
                raise VectorStoreError(
                    f"Could not open the Milvus Lite file {self.uri}: {exc}. Only one process at a time may open it; "
                    "another one probably has it open (a notebook kernel, the agent API, a test). Close that one "
                    "(store.close(), or restart its kernel), or use another file or a Milvus server by URI."
                ) from None
            raise VectorStoreError(f"Could not connect to Milvus at {self.uri}: {exc}") from None
        self.dim: int | None = None
        if self.client.has_collection(collection):
            self.dim = self._collection_dim()
            self.client.load_collection(collection)

    # ------------------------------------------------------------ collection

    def _collection_dim(self) -> int:
        info = self.client.describe_collection(self.collection)
        for f in info["fields"]:
            if f["name"] == "vector":
                return int(f["params"]["dim"])
        raise VectorStoreError(f"collection {self.collection} has no 'vector' field; drop it and re-ingest")

    def ensure_collection(self, dim: int) -> bool:
        """Create the collection (schema + HNSW index) if missing; refuse a collection built for another dim."""
        from pymilvus import DataType, MilvusClient

        if self.client.has_collection(self.collection):
            existing = self._collection_dim()
            if existing != dim:
                raise VectorStoreError(
                    f"collection {self.collection} holds {existing}-d vectors, the embedding model makes {dim}-d "
                    "ones. Vectors of different models cannot be mixed: drop the collection (store.drop()) and "
                    "ingest again."
                )
            self.dim = existing
            self.client.load_collection(self.collection)
            return False
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("source", DataType.VARCHAR, max_length=512)
        schema.add_field("title", DataType.VARCHAR, max_length=512)
        schema.add_field("category", DataType.VARCHAR, max_length=64)
        schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS, max_length=64)
        schema.add_field("position", DataType.INT64)
        schema.add_field("n_tokens", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
        index = self.client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_type="HNSW",
            metric_type="COSINE",
            params={"M": self.hnsw.M, "efConstruction": self.hnsw.efConstruction},
        )
        self.client.create_collection(self.collection, schema=schema, index_params=index)
        self.client.load_collection(self.collection)
        self.dim = dim
        return True

    def index_description(self) -> dict[str, Any]:
        """What Milvus says about the vector index (type, metric, parameters, rows indexed)."""
        return dict(self.client.describe_index(self.collection, "vector"))

    def _require_dim(self) -> int:
        if self.dim is None:
            raise VectorStoreError(f"collection {self.collection} does not exist yet: call ensure_collection(dim)")
        return self.dim

    # ------------------------------------------------------------ writes

    def upsert(self, chunks: Sequence[Chunk]) -> int:
        """Write chunks under their ids (a chunk with an existing id replaces it)."""
        dim = self._require_dim()
        checked = check_chunks(chunks, dim)
        rows = []
        for c in checked:
            if len(c.text) > MAX_TEXT or len(c.tags) > MAX_TAGS:
                raise VectorStoreError(f"chunk {c.id} ({c.source}) is too large to store: make chunks smaller")
            rows.append({"id": c.id, "vector": unit(c.vector).tolist(), **c.metadata()})
        if rows:
            self.client.upsert(self.collection, rows)
        return len(rows)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete chunks by id."""
        ids = list(ids)
        if ids and self.dim is not None:
            self.client.delete(self.collection, ids=ids)
        return len(ids)

    def refresh(self) -> None:
        """Flush new rows into a segment (which builds its HNSW graph), then reload so searches use the graph."""
        if self.dim is None:
            return
        self.client.flush(self.collection)
        self._wait_for_index()
        self.client.release_collection(self.collection)
        self._load()

    def _wait_for_index(self, timeout: float = 300.0) -> None:
        """Wait until the HNSW graph of every flushed row is built (Milvus builds it in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.client.describe_index(self.collection, "vector")
            if info.get("state", "Finished") == "Finished" and not info.get("pending_index_rows"):
                return
            if time.monotonic() > deadline:
                raise VectorStoreError(f"Milvus is still building the index of {self.collection} after {timeout:.0f} s "
                                       f"({info}). The machine may be overloaded: wait, then call store.refresh() again.")
            time.sleep(0.2)

    def _load(self, attempts: int = 5) -> None:
        """Load the collection; retry while an index file is still being written ("read error ... unavailable")."""
        from pymilvus.exceptions import MilvusException

        for attempt in range(attempts):
            try:
                self.client.load_collection(self.collection)
                return
            except MilvusException as exc:
                if "read error" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)
        if self.local and not self.client.list_collections():
            # Milvus Lite removes a dropped collection's index files in the background; a new collection
            # created at once can reuse their names and read a half-deleted file ("read error ... hnsw.idx").
            # When nothing else lives in the file, start it afresh instead.
            from pymilvus import MilvusClient

            self.close()
            shutil.rmtree(self.uri, ignore_errors=True)
            self.client = MilvusClient(uri=self.uri)
        self.dim = None

    def close(self) -> None:
        """Close the client; for Milvus Lite also stop its server thread, which releases the file for others."""
        try:
            self.client.close()
        finally:
            if self.local:
                from milvus_lite import server_manager_instance

                server_manager_instance.release_server(self.uri)

    # ------------------------------------------------------------ reads

    def search(
        self, vector: Sequence[float] | np.ndarray, k: int = 5, filter: Filter | None = None,
        ef_search: int | None = None,
    ) -> list[Hit]:
        """The k nearest chunks by cosine similarity (HNSW), optionally filtered on metadata."""
        dim = self._require_dim()
        query = unit(check_vector(vector, dim))
        if k < 1:
            raise ValueError("k must be at least 1")
        ef = max(ef_search or self.hnsw.ef, k)  # HNSW needs at least k candidates to return k results
        results = self.client.search(
            self.collection,
            data=[query.tolist()],
            limit=k,
            filter=milvus_filter(filter),
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "COSINE", "params": {"ef": ef}},
        )
        hits = []
        for r in results[0]:
            e = r["entity"]
            score = float(r["distance"])  # for COSINE, Milvus returns the similarity itself
            hits.append(Hit(id=str(r["id"]), score=score, raw_score=score, source=e["source"], title=e["title"],
                            category=e["category"], tags=tuple(e["tags"] or ()), position=int(e["position"]),
                            text=e["text"]))
        return hits

    def _query_all(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        if self.dim is None:
            return []
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.client.query(self.collection, filter=expr, output_fields=fields, limit=PAGE, offset=offset)
            rows += page
            if len(page) < PAGE:
                return rows
            offset += PAGE
            if offset + PAGE > 16_384:
                raise VectorStoreError("more than 16,384 matching rows: page by source instead")

    def ids_for_source(self, source: str) -> set[str]:
        """The ids of every chunk of one document."""
        expr = milvus_filter({"source": source})
        return {str(r["id"]) for r in self._query_all(expr, ["id"])}

    def sources(self) -> set[str]:
        """Every document path in the collection."""
        return {r["source"] for r in self._query_all('id != ""', ["source"])}

    def count(self) -> int:
        """How many chunks the collection holds."""
        if self.dim is None:
            return 0
        answer = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(answer[0]["count(*)"])

    def export_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every id and its stored vector."""
        rows = self._query_all('id != ""', ["id", "vector"])
        ids = [str(r["id"]) for r in rows]
        matrix = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), self.dim or 0)
        return ids, matrix


def milvus_filter(filter: Filter | None) -> str:
    """A metadata filter as a Milvus boolean expression, e.g. `category == "troubleshooting"`."""
    parts = []
    for key, value in check_filter(filter).items():
        if key == "tags":
            parts.append(f'ARRAY_CONTAINS(tags, "{value}")')
        else:
            parts.append(f'{key} == "{value}"')
    return " and ".join(parts)
