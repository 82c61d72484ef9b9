"""How good is an approximate index? recall@k against exact brute-force search on the very same vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from helpers.layers.rag.stores.base import Filter, VectorStore, check_vector

TIE = 1e-6  # two similarities closer than this are a tie (identical chunks have identical vectors)


@dataclass(frozen=True)
class RecallReport:
    """recall@k of an index: the share of the exact top-k that the index returned, averaged over queries."""

    k: int
    recall: float
    per_query: tuple[float, ...]
    n_queries: int
    n_vectors: int
    ef_search: int | None

    def as_row(self) -> dict[str, object]:
        """The report as a table row."""
        return {"k": self.k, "ef_search": self.ef_search or "default", "queries": self.n_queries,
                "vectors": self.n_vectors, f"recall@{self.k}": round(self.recall, 4),
                "worst query": round(min(self.per_query), 2) if self.per_query else None}


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def exact_top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the indices and cosine similarities of the k rows nearest to the query, best first."""
    sims = normalise_rows(vectors) @ (query / np.linalg.norm(query))
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


def recall_at_k(
    store: VectorStore,
    queries: Sequence[Sequence[float]] | np.ndarray,
    k: int = 5,
    ids: Sequence[str] | None = None,
    vectors: np.ndarray | None = None,
    ef_search: int | None = None,
    filter: Filter | None = None,
) -> RecallReport:
    """recall@k of the store's index vs exact numpy search over its own vectors (exported unless given).

    A returned id counts as correct when its exact similarity is at least the k-th best exact similarity
    (minus a tiny tolerance), so ties between identical chunks are not counted as misses.
    """
    if filter:
        raise ValueError("recall_at_k compares unfiltered searches; leave filter empty")
    if ids is None or vectors is None:
        ids, vectors = store.export_vectors()
    ids = list(ids)
    if not ids:
        raise ValueError("the store is empty: ingest something first")
    matrix = normalise_rows(np.asarray(vectors, dtype=np.float32))
    position = {chunk_id: i for i, chunk_id in enumerate(ids)}
    k_eff = min(k, len(ids))
    scores = []
    for query in queries:
        q = check_vector(query, matrix.shape[1])
        q = q / np.linalg.norm(q)
        sims = matrix @ q
        kth = np.sort(sims)[::-1][k_eff - 1]
        hits = store.search(q, k=k_eff, ef_search=ef_search)
        good = sum(1 for h in hits if h.id in position and sims[position[h.id]] >= kth - TIE)
        scores.append(min(good, k_eff) / k_eff)
    return RecallReport(k=k, recall=float(np.mean(scores)) if scores else 0.0, per_query=tuple(scores),
                        n_queries=len(scores), n_vectors=len(ids), ef_search=ef_search)
