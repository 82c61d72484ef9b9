"""The knowledge base: Markdown documents -> token-aware chunks -> embeddings -> a vector store, idempotently.

- Documents live in `knowledge/<category>/<name>.md`, each opening with a front-matter block that holds a
  `title:` line and a `tags:` line (both become search metadata; the folder is the `category`).
- Chunking counts tokens with the embedding model's own tokenizer (all-MiniLM-L6-v2's WordPiece vocabulary,
  shipped in helpers/data and read by `tokenizers`; the same counts as llama.cpp's), so a chunk never exceeds
  what the model reads. Chunks end at sentence boundaries where possible and overlap their neighbours.
- A chunk's id is the sha256 of its document's path, its position and its exact text: a re-run embeds only chunks the
  store lacks; a changed document's new chunks are written before its stale ones go; a removed one loses its chunks.
- Embeddings come from the OpenAI-compatible endpoint the caller names (`t.gateway_embeddings`, the gateway's
  `embedding` route; no silent fallback to another server). Every vector is checked (count, dimension,
  finite, not zero). Any failure stops the ingest with a clear message and writes nothing from that batch;
  a random or zero vector is never indexed.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from helpers.errors import WorkshopError
from helpers.config import ROOT, get_settings
from helpers.layers.rag.stores.base import Chunk, Filter, Hit, InvalidVector, VectorStore, check_vector, unit
from helpers.target import Endpoint

KNOWLEDGE_DIR = ROOT / "knowledge"
CATEGORIES = ("components", "concepts", "troubleshooting")
MAX_TOKENS = 256  # sentence-transformers cuts all-MiniLM-L6-v2 input at 256 word pieces; chunks stay within that
OVERLAP = 48  # tokens a chunk repeats from the end of the previous one, so a fact split at a border survives
BATCH_SIZE = 16  # texts per embedding request
# Questions a learner might ask, each with the document that answers it: for retrieval checks and recall@k.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("Why is my GPU pod stuck in Pending?", "troubleshooting/pending-pods.md"),
    ("How much GPU memory does the KV cache of Qwen3-14B need per token?", "concepts/kv-cache.md"),
    ("What does ef_search change in an HNSW index?", "concepts/hnsw.md"),
    ("My container was killed with exit code 137, what happened?", "troubleshooting/oomkilled.md"),
    ("Which volume binding mode should a gp3 StorageClass use?", "components/gp3-ebs-storage.md"),
    ("How does a pod get AWS credentials without access keys?", "components/eks-pod-identity.md"),
    ("What is the difference between tensor and pipeline parallelism?", "concepts/tensor-parallelism.md"),
    ("How do I give the agent a budget and a rate limit in the gateway?", "components/litellm-virtual-keys.md"),
    ("The model server cannot download weights: 403 GatedRepoError", "troubleshooting/hf-token-errors.md"),
    ("How can a small model use tools over the Model Context Protocol?", "components/mcp.md"),
    ("What does PagedAttention do?", "concepts/paged-attention.md"),
    ("Why do my ServiceMonitors scrape nothing?", "components/prometheus.md"),
)
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_SENTENCE_END = re.compile(r"[.!?:;]\)?[\"']?$")
_LIST_MARKER = re.compile(r"^(\d+[.)]|[-*+])$")


class KnowledgeError(WorkshopError):
    """A knowledge-base document is malformed; the message names the file and the fix."""


class EmbeddingError(WorkshopError):
    """The embedding endpoint failed or returned something that must not be indexed."""


class IngestError(WorkshopError):
    """Ingestion stopped; the message says what was written, what was not, and what to do."""


# ---------------------------------------------------------------- documents


@dataclass(frozen=True)
class Document:
    """One knowledge-base document: where it lives, its metadata, and its body (front matter removed)."""

    source: str  # path relative to the knowledge folder, with forward slashes
    title: str
    tags: tuple[str, ...]
    category: str
    text: str

    @property
    def words(self) -> int:
        """Number of words in the body."""
        return len(self.text.split())

    @property
    def sha256(self) -> str:
        """Fingerprint of the document's content and metadata."""
        return hashlib.sha256(f"{self.title}\n{','.join(self.tags)}\n{self.text}".encode()).hexdigest()


def parse_document(path: Path, root: Path = KNOWLEDGE_DIR) -> Document:
    """Read one Markdown document; raises KnowledgeError when its title or tags line is missing."""
    raw = path.read_text(encoding="utf-8")
    source = path.relative_to(root).as_posix()
    match = _FRONT_MATTER.match(raw)
    if not match:
        raise KnowledgeError(f"{source}: no front matter. Start the file with ---, a `title:` line, a `tags:` "
                             "line and --- again.")
    meta: dict[str, str] = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip().lower()] = value.strip()
    title = meta.get("title", "").strip("\"'")
    tags = tuple(t.strip().strip("\"'").lower() for t in meta.get("tags", "").strip("[]").split(",") if t.strip())
    if not title or not tags:
        raise KnowledgeError(f"{source}: the front matter needs both a `title:` line and a `tags:` line")
    category = source.split("/")[0] if "/" in source else "general"
    return Document(source=source, title=title, tags=tags, category=category, text=raw[match.end():].strip())


def load_documents(root: Path | str = KNOWLEDGE_DIR) -> list[Document]:
    """Every `*.md` document under the knowledge folder, in path order."""
    root = Path(root)
    if not root.is_dir():
        raise KnowledgeError(f"knowledge folder {root} does not exist")
    return [parse_document(p, root) for p in sorted(root.rglob("*.md"))]


# ---------------------------------------------------------------- tokens and chunks


# The WordPiece vocabularies shipped in helpers/data, by embedding model (registry name): file and sha256.
VOCABULARIES: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2-f16": ("all-MiniLM-L6-v2.vocab.txt",
                             "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
}
DATA_DIR = ROOT / "helpers" / "data"


class TokenCounter:
    """Counts tokens exactly as the embedding model sees them: its WordPiece vocabulary through `tokenizers`.

    The pipeline is the model's own (its tokenizer.json): BERT normaliser (lower-case, accents stripped, control
    characters removed, CJK characters split), BERT pre-tokeniser, WordPiece with `##` continuations, and
    [CLS] ... [SEP] around the text. No special token is recognised inside the text, as llama.cpp does with
    `special=False`. Needs no model file and no llama.cpp: the agent's image ingests with it."""

    def __init__(self, vocab_path: Path, sha256: str | None = None) -> None:
        from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        self.vocab_path = Path(vocab_path)
        if sha256 is not None and (actual := hashlib.sha256(self.vocab_path.read_bytes()).hexdigest()) != sha256:
            raise KnowledgeError(f"{self.vocab_path}: sha256 {actual}, expected {sha256}; the vocabulary file was "
                                 "changed: restore it with git")
        tokenizer = Tokenizer(WordPiece.from_file(str(self.vocab_path), unk_token="[UNK]",
                                                  max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                          strip_accents=None, lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
        self._tokenizer = tokenizer

    @property
    def description(self) -> str:
        """Which tokenizer this is."""
        return f"WordPiece vocabulary {self.vocab_path.name} (tokenizers, the embedding model's own pipeline)"

    def tokens(self, text: str, special: bool = True) -> list[int]:
        """Token ids; `special` adds the [CLS] ... [SEP] the model always sees."""
        return self._tokenizer.encode(text, add_special_tokens=special).ids

    def count(self, text: str, special: bool = True) -> int:
        """Number of tokens (with [CLS] and [SEP] unless special=False)."""
        return len(self.tokens(text, special))

    def pieces(self, text: str) -> list[str]:
        """The word pieces of a text, for display (lower-cased, as the uncased model sees them): a piece that
        starts a word has a leading space, a continuation (`##ing`) has none."""
        tokens = self._tokenizer.encode(text, add_special_tokens=False).tokens
        return [t[2:] if t.startswith("##") else f" {t}" for t in tokens]


@lru_cache(maxsize=2)
def token_counter(model_name: str | None = None) -> TokenCounter:
    """The token counter of the embedding model (its vocabulary shipped in helpers/data, checksum-verified)."""
    name = model_name or get_settings().embedding_model
    if name not in VOCABULARIES:
        raise KnowledgeError(f"no WordPiece vocabulary is shipped for embedding model {name!r} "
                             f"(known: {', '.join(VOCABULARIES)})",
                             "add its vocab.txt to helpers/data and an entry to knowledge.VOCABULARIES")
    filename, sha256 = VOCABULARIES[name]
    return TokenCounter(DATA_DIR / filename, sha256)


def chunk_id(source: str, position: int, embedded_text: str) -> str:
    """A stable id: sha256 of the document path, the chunk's position and the exact text that is embedded."""
    return hashlib.sha256(f"{source}\n{position}\n{embedded_text}".encode()).hexdigest()


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def _ends_sentence(word: str) -> bool:
    """A word that ends a sentence or a paragraph (a list number such as "3." does not)."""
    if word.endswith("\n\n"):
        return True
    stripped = word.rstrip()
    return bool(_SENTENCE_END.search(stripped)) and not _LIST_MARKER.match(stripped)


def chunk_document(doc: Document, counter: TokenCounter, max_tokens: int = MAX_TOKENS,
                   overlap: int = OVERLAP) -> list[Chunk]:
    """Split a document into chunks of at most `max_tokens` tokens (title and [CLS]/[SEP] included) that
    overlap by up to `overlap` tokens and end at a sentence boundary where one is near."""
    header = counter.count(f"{doc.title}\n\n")  # the title (and [CLS]/[SEP]) every chunk carries
    budget = max_tokens - header
    if budget < 32:
        raise ValueError(f"{doc.source}: max_tokens={max_tokens} leaves {budget} tokens after the title; raise it")
    if not 0 <= overlap < budget // 2:
        raise ValueError(f"overlap must be between 0 and {budget // 2 - 1} tokens")
    words = _words(doc.text)
    counts = [counter.count(w, special=False) for w in words]
    chunks: list[Chunk] = []
    seen: set[str] = set()
    start = 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and used + counts[end] <= budget:
            used += counts[end]
            end += 1
        end = max(end, start + 1)  # a single over-long "word" still makes progress
        if end < len(words):  # prefer to stop after a sentence or paragraph, if one is in the last 40%
            floor = start + max(1, int((end - start) * 0.6))
            for cut in range(end, floor, -1):
                if _ends_sentence(words[cut - 1]):
                    end = cut
                    break
        text = "".join(words[start:end]).strip()
        embedded = f"{doc.title}\n\n{text}"
        while counter.count(embedded) > max_tokens and end > start + 1:  # exact check on the joined text
            end -= 1
            text = "".join(words[start:end]).strip()
            embedded = f"{doc.title}\n\n{text}"
        if embedded not in seen:  # identical text twice in one document: store it once
            seen.add(embedded)
            chunks.append(Chunk(id=chunk_id(doc.source, len(chunks), embedded), source=doc.source, title=doc.title,
                                category=doc.category, tags=doc.tags,
                                position=len(chunks), text=text, n_tokens=counter.count(embedded)))
        if end >= len(words):
            break
        # the next chunk starts up to `overlap` tokens back, at a sentence start if one is in that range
        back, nxt = 0, end
        while nxt - 1 > start and back + counts[nxt - 1] <= overlap:
            nxt -= 1
            back += counts[nxt]
        for s in range(nxt, end):  # snap to a sentence start only if that keeps at least half the overlap
            if sum(counts[s:end]) < overlap // 2:
                break
            if s > start and _ends_sentence(words[s - 1]):
                nxt = s
                break
        start = max(nxt, start + 1)
    return chunks


# ---------------------------------------------------------------- embeddings


class Embedder:
    """Embeds texts through an OpenAI-compatible endpoint and checks every vector before anyone may use it."""

    def __init__(self, endpoint: Endpoint, dim: int | None = None, timeout: float = 60.0,
                 max_retries: int = 2, extra_body: dict[str, Any] | None = None) -> None:
        from openai import OpenAI

        from helpers.layers.models import get_spec
        from helpers.layers.observability import tracing

        self.endpoint = endpoint
        self.extra_body = dict(extra_body or {})  # sent with every request, e.g. the gateway's NO_CACHE
        self.dim = dim or int(get_spec(get_settings().embedding_model).dimension or 0)
        if self.dim < 1:
            raise ValueError("unknown embedding dimension: pass dim=")
        # the caller's trace context goes with every request: the gateway and Ray Serve join the caller's trace
        self._client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.key() or "none", timeout=timeout,
                              max_retries=max_retries, http_client=tracing.http_client(timeout=timeout))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text, as a (len(texts), dim) array; raises EmbeddingError on any problem."""
        import openai

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        where = self.endpoint.describe()
        try:
            answer = self._client.embeddings.create(model=self.endpoint.model, input=list(texts),
                                                    encoding_format="float", extra_body=self.extra_body or None)
        except openai.APIConnectionError as exc:
            raise EmbeddingError(f"cannot reach the embedding endpoint ({where}): {exc}. Is it running? "
                                 "`python -m helpers.local.stack status` shows the local services.") from None
        except openai.APIStatusError as exc:
            body = str(exc.message)[:300]
            raise EmbeddingError(f"the embedding endpoint ({where}) answered HTTP {exc.status_code}: {body}") from None
        except openai.OpenAIError as exc:
            raise EmbeddingError(f"embedding request to {where} failed: {type(exc).__name__}: {exc}") from None
        data = sorted(answer.data or [], key=lambda d: d.index)
        if len(data) != len(texts):
            raise EmbeddingError(f"{where} returned {len(data)} vectors for {len(texts)} texts")
        vectors = []
        for i, item in enumerate(data):
            try:
                vectors.append(unit(check_vector(item.embedding, self.dim)))
            except InvalidVector as exc:
                raise EmbeddingError(f"{where} returned an unusable vector for text {i}: {exc}") from None
        return np.vstack(vectors)

    def embed_one(self, text: str) -> np.ndarray:
        """The unit vector of one text."""
        return self.embed([text])[0]


# ---------------------------------------------------------------- ingestion


@dataclass
class DocumentOutcome:
    """What ingestion did with one document."""

    source: str
    status: str  # added, updated, unchanged, deleted
    chunks: int  # chunks the document has now
    written: int  # chunks embedded and written this run
    deleted: int  # stale chunks removed this run


@dataclass
class IngestReport:
    """The outcome of one ingestion run, counted in documents and in chunks."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    seconds: float = 0.0
    chunks_written: int = 0
    chunks_deleted: int = 0
    chunks_total: int = 0
    tokens_embedded: int = 0
    batches: int = 0
    endpoint: str = ""
    documents: list[DocumentOutcome] = field(default_factory=list)

    def summary(self) -> str:
        """One line: documents added/updated/unchanged/deleted and chunks written/deleted."""
        return (f"documents: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.deleted} deleted | chunks: {self.chunks_written} written, {self.chunks_deleted} deleted, "
                f"{self.chunks_total} in the store")

    def as_row(self) -> dict[str, Any]:
        """The counts as a table row (no per-document detail)."""
        row = asdict(self)
        row.pop("documents")
        row["seconds"] = round(self.seconds, 2)
        return row

    def changed(self) -> list[DocumentOutcome]:
        """The documents this run touched."""
        return [d for d in self.documents if d.status != "unchanged"]


def ingest(
    store: VectorStore,
    embedder: Embedder,
    documents: Iterable[Document] | None = None,
    counter: TokenCounter | None = None,
    batch_size: int = BATCH_SIZE,
    max_tokens: int = MAX_TOKENS,
    overlap: int = OVERLAP,
    progress: bool = True,
) -> IngestReport:
    """Bring the store in line with the documents: embed and write new chunks, delete stale ones.

    Idempotent: a second run over the same documents embeds and writes nothing. A batch whose embeddings
    fail is not written and ingestion stops with IngestError; batches written before it stay (they are
    valid), and the next run picks up where this one stopped.
    """
    started = time.perf_counter()
    documents = list(load_documents() if documents is None else documents)
    counter = counter or token_counter()
    report = IngestReport(endpoint=embedder.endpoint.describe())
    store.ensure_collection(embedder.dim)

    todo: list[Chunk] = []
    stale_by_source: dict[str, set[str]] = {}
    outcomes: dict[str, DocumentOutcome] = {}
    for doc in documents:
        chunks = chunk_document(doc, counter, max_tokens, overlap)
        existing = store.ids_for_source(doc.source)
        new_ids = {c.id for c in chunks}
        missing = [c for c in chunks if c.id not in existing]
        stale = existing - new_ids
        status = "added" if not existing else ("unchanged" if not missing and not stale else "updated")
        outcomes[doc.source] = DocumentOutcome(doc.source, status, len(chunks), len(missing), len(stale))
        todo += missing
        if stale:
            stale_by_source[doc.source] = stale
    for source in sorted(store.sources() - set(outcomes)):  # documents that no longer exist
        stale_by_source[source] = store.ids_for_source(source)
        outcomes[source] = DocumentOutcome(source, "deleted", 0, 0, len(stale_by_source[source]))

    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = tqdm(total=len(todo), unit="chunk", desc="embedding + writing", disable=not progress or not todo)
    try:
        for number, batch in enumerate(batches, start=1):
            try:
                vectors = embedder.embed([c.embedding_text for c in batch])
            except EmbeddingError as exc:
                raise IngestError(
                    f"Ingestion stopped at batch {number} of {len(batches)}: {exc}\n"
                    f"Nothing from this batch was written. {report.chunks_written} chunk(s) from earlier batches "
                    "were written and are valid; no stale chunk was deleted. Fix the embedding endpoint and run "
                    "the ingestion again: it skips what is already stored."
                ) from None
            for chunk, vector in zip(batch, vectors):
                chunk.vector = vector
            store.upsert(batch)
            report.chunks_written += len(batch)
            report.tokens_embedded += sum(c.n_tokens for c in batch)
            report.batches += 1
            bar.update(len(batch))
    finally:
        bar.close()
    for source, ids in stale_by_source.items():  # only after every new chunk is in place
        report.chunks_deleted += store.delete(sorted(ids))
    if todo or stale_by_source:
        store.refresh()

    report.documents = [outcomes[s] for s in sorted(outcomes)]
    for outcome in report.documents:
        setattr(report, outcome.status, getattr(report, outcome.status) + 1)
    report.chunks_total = store.count()
    report.seconds = time.perf_counter() - started
    return report


def search(store: VectorStore, embedder: Embedder, question: str, k: int = 5, filter: Filter | None = None,
           ef_search: int | None = None) -> list[Hit]:
    """The k chunks closest in meaning to a question (optionally only those matching a metadata filter)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question must be a non-empty string")
    return store.search(embedder.embed_one(question), k=k, filter=filter, ef_search=ef_search)
