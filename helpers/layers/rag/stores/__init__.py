"""Vector stores behind one interface: Milvus (Lite locally, standalone in a cluster) and Amazon OpenSearch k-NN.

    from helpers.layers.rag.stores import open_store
    store = open_store()                      # Milvus Lite in the state folder (local default)

`recall_at_k` measures an index against exact brute-force search on the same vectors.
"""

from __future__ import annotations

from pathlib import Path

from helpers.layers.rag.stores.base import (
    FILTER_FIELDS,
    Chunk,
    Filter,
    Hit,
    InvalidVector,
    VectorStore,
    VectorStoreError,
    check_filter,
    check_vector,
)
from helpers.layers.rag.stores.recall import RecallReport, exact_top_k, recall_at_k

__all__ = [
    "FILTER_FIELDS", "Chunk", "Filter", "Hit", "InvalidVector", "RecallReport", "VectorStore", "VectorStoreError",
    "check_filter", "check_vector", "exact_top_k", "open_store", "recall_at_k",
]


def open_store(backend: str = "milvus", **kwargs: object) -> VectorStore:
    """A vector store: "milvus" (kwargs: uri, collection, token) or "opensearch" (kwargs: endpoint, region, index)."""
    if backend == "milvus":
        from helpers.layers.rag.stores.milvus import MilvusStore

        uri = kwargs.pop("uri", None)
        return MilvusStore(uri=str(uri) if isinstance(uri, Path) else uri, **kwargs)  # type: ignore[arg-type]
    if backend == "opensearch":
        from helpers.layers.rag.stores.opensearch import OpenSearchStore

        return OpenSearchStore.from_endpoint(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown vector store backend {backend!r}: use 'milvus' or 'opensearch'")
