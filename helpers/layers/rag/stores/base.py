"""One vector-store interface for the knowledge base: the chunk and hit types, filters, and vector checks.

Two backends implement `VectorStore`: `helpers.layers.rag.stores.milvus.MilvusStore` (Milvus Lite on a file, the
local default, or a Milvus standalone server by URI) and `helpers.layers.rag.stores.opensearch.OpenSearchStore`
(Amazon OpenSearch Service k-NN, the `eks` target). Ingestion (`helpers.layers.rag.knowledge`) and the agent only ever
talk to this interface, so switching backends changes one constructor call.

Scores are the same on both backends: `Hit.score` is the cosine similarity of the query and the chunk
(1.0 = same direction, 0 = unrelated); each backend converts its native score (kept in `Hit.raw_score`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from helpers.errors import WorkshopError

# The metadata a search can filter on (exact match; for `tags`, "has this tag").
FILTER_FIELDS = ("source", "category", "tags", "title")
# Filter values must be plain words, paths or titles: no quotes or backslashes reach a query language.
_SAFE_VALUE = re.compile(r"^[^\"\\]{1,256}$")

Filter = dict[str, str]


class VectorStoreError(WorkshopError):
    """The vector store cannot do what was asked; the message says what to do."""


class InvalidVector(ValueError):
    """A vector that must never be indexed or searched: wrong length, NaN/inf, or all zeros."""


@dataclass
class Chunk:
    """One piece of a knowledge-base document, as it is embedded and stored."""

    id: str  # stable: sha256 of source path, position and embedded text (helpers.layers.rag.knowledge.chunk_id)
    source: str  # the document's path inside the knowledge folder, e.g. "troubleshooting/pending-pods.md"
    title: str
    category: str  # the document's folder: components, concepts or troubleshooting
    tags: tuple[str, ...]
    position: int  # 0 for the document's first chunk, 1 for the next, ...
    text: str  # the chunk's own text (what a search shows and an answer cites)
    n_tokens: int  # tokens of embedding_text, counted with the embedding model's tokenizer
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def embedding_text(self) -> str:
        """What is embedded: the document title, then the chunk (so a chunk keeps its topic)."""
        return f"{self.title}\n\n{self.text}"

    def metadata(self) -> dict[str, Any]:
        """Every stored field except the vector."""
        return {
            "source": self.source,
            "title": self.title,
            "category": self.category,
            "tags": list(self.tags),
            "position": self.position,
            "n_tokens": self.n_tokens,
            "text": self.text,
        }


@dataclass(frozen=True)
class Hit:
    """One search result: which chunk, how close (cosine similarity), and its metadata."""

    id: str
    score: float  # cosine similarity of query and chunk, whatever the backend
    raw_score: float  # the backend's own score (Milvus COSINE: the cosine; OpenSearch cosinesimil: (1 + cos) / 2)
    source: str
    title: str
    category: str
    tags: tuple[str, ...]
    position: int
    text: str

    def as_row(self, width: int = 110) -> dict[str, Any]:
        """The hit as a table row, the text shortened."""
        text = " ".join(self.text.split())
        return {
            "score": round(self.score, 3),
            "source": self.source,
            "chunk": self.position,
            "text": text if len(text) <= width else text[: width - 1] + "…",
        }


def check_vector(vector: Sequence[float] | np.ndarray, dim: int) -> np.ndarray:
    """The vector as float32 after checking it: exactly `dim` finite numbers, not all zero. Raises InvalidVector."""
    try:
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidVector(f"not a vector of numbers ({type(vector).__name__}): {exc}") from None
    if array.ndim != 1 or array.shape[0] != dim:
        raise InvalidVector(
            f"vector has {array.shape[0] if array.ndim == 1 else array.shape} dimensions, the index expects {dim}. "
            "Embed with the model the index was built for, or rebuild the index for the new model."
        )
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise InvalidVector(f"vector holds {bad} NaN or infinite value(s); it would corrupt the index")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise InvalidVector("vector is all zeros: it has no direction, so cosine similarity is undefined")
    return array.astype(np.float32)


def unit(vector: np.ndarray) -> np.ndarray:
    """The vector scaled to length 1 (cosine similarity then equals the dot product)."""
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def check_filter(filter: Filter | None) -> Filter:
    """A filter after checking its fields and values; raises ValueError saying what is allowed."""
    if not filter:
        return {}
    if not isinstance(filter, dict):
        raise ValueError(f"a filter is a dict such as {{'category': 'troubleshooting'}}, not {type(filter).__name__}")
    for key, value in filter.items():
        if key not in FILTER_FIELDS:
            raise ValueError(f"cannot filter on {key!r}: filter on one of {', '.join(FILTER_FIELDS)}")
        if not isinstance(value, str) or not _SAFE_VALUE.match(value):
            raise ValueError(f"filter value for {key!r} must be a non-empty string without quotes or backslashes")
    return dict(filter)


def check_chunks(chunks: Iterable[Chunk], dim: int) -> list[Chunk]:
    """The chunks, each with a checked vector of `dim` numbers; raises InvalidVector naming the first bad one."""
    checked = []
    for chunk in chunks:
        if chunk.vector is None:
            raise InvalidVector(f"chunk {chunk.id} ({chunk.source}) has no vector")
        try:
            chunk.vector = check_vector(chunk.vector, dim)
        except InvalidVector as exc:
            raise InvalidVector(f"chunk {chunk.id} ({chunk.source} #{chunk.position}): {exc}") from None
        checked.append(chunk)
    return checked


class VectorStore(ABC):
    """What the knowledge base needs from a vector index; every backend implements exactly this."""

    backend: str = "?"
    dim: int | None = None

    @abstractmethod
    def ensure_collection(self, dim: int) -> bool:
        """Create the collection/index for `dim`-long vectors if missing (True if created); refuse another dim."""

    @abstractmethod
    def upsert(self, chunks: Sequence[Chunk]) -> int:
        """Write chunks (with vectors) under their ids, replacing any with the same id; return how many."""

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> int:
        """Delete chunks by id; return how many ids were asked for."""

    @abstractmethod
    def search(
        self, vector: Sequence[float] | np.ndarray, k: int = 5, filter: Filter | None = None,
        ef_search: int | None = None,
    ) -> list[Hit]:
        """The k chunks nearest to the vector (cosine), optionally only those matching the filter."""

    @abstractmethod
    def ids_for_source(self, source: str) -> set[str]:
        """The ids of every chunk stored for one document."""

    @abstractmethod
    def sources(self) -> set[str]:
        """Every document path that has chunks in the store."""

    @abstractmethod
    def count(self) -> int:
        """How many chunks the store holds."""

    @abstractmethod
    def export_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every (id, vector) pair in the store: the ground truth for recall_at_k."""

    @abstractmethod
    def refresh(self) -> None:
        """Make every write visible to search and indexed (called once at the end of an ingest)."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the whole collection/index (cleanup)."""

    def close(self) -> None:
        """Release connections and files (default: nothing to release)."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
