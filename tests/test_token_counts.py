"""Token counting without llama.cpp (issue 12, defect 4): the shipped WordPiece vocabulary read by `tokenizers` counts
exactly what llama.cpp counted with the embedding model's GGUF file, on the whole knowledge base, and needs neither
llama-cpp-python nor a model file under $HOME (the agent's image has neither)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import pytest

from helpers.layers.rag import knowledge


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence llama.cpp's start-up chatter (file descriptor 2 and sys.stderr)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull, redirect_stderr(io.StringIO()):
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LlamaCppCounter:
    """The counter the workshop used before: the vocabulary inside the GGUF file, read by llama.cpp (vocab_only)."""

    def __init__(self, model_path: Path) -> None:
        from llama_cpp import Llama

        with quiet_stderr():
            self._llama = Llama(model_path=str(model_path), vocab_only=True, verbose=False)

    def tokens(self, text: str, special: bool = True) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=special, special=False)

    def count(self, text: str, special: bool = True) -> int:
        return len(self.tokens(text, special))

    def pieces(self, text: str) -> list[str]:
        return [self._llama.detokenize([t]).decode("utf-8", "replace") for t in self.tokens(text, special=False)]


@pytest.fixture(scope="module")
def llama_counter() -> LlamaCppCounter:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the reference here: install the dev venv (make env)")
    from helpers.config import get_settings
    from helpers.layers.models import fetch

    return LlamaCppCounter(fetch(get_settings().embedding_model))


def texts_of(doc: knowledge.Document, chunks: list) -> list[str]:
    """Every text chunking counts for a document: the header, each word, each embedded chunk, the whole text."""
    return ([f"{doc.title}\n\n", doc.text] + knowledge._words(doc.text)
            + [f"{doc.title}\n\n{c.text}" for c in chunks])


def test_counts_equal_llama_cpp_on_the_whole_knowledge_base(llama_counter: LlamaCppCounter) -> None:
    counter = knowledge.token_counter()
    docs = knowledge.load_documents()
    assert len(docs) >= 20
    compared = 0
    for doc in docs:
        reference = knowledge.chunk_document(doc, llama_counter)  # type: ignore[arg-type]
        chunks = knowledge.chunk_document(doc, counter)
        assert [(c.id, c.n_tokens, c.text) for c in chunks] == [(c.id, c.n_tokens, c.text) for c in reference], \
            doc.source
        for text in texts_of(doc, reference):
            assert counter.tokens(text) == llama_counter.tokens(text), (doc.source, text[:80])
            assert counter.tokens(text, special=False) == llama_counter.tokens(text, special=False)
            compared += 1
    assert compared > 10_000  # every word, chunk and document: not a sample


@pytest.mark.parametrize("text", [
    "Tokenizers split unbelievably long words",
    "Ünïcödé accents, CJK 模型 and [CLS] [SEP] written in the text",
    "nvidia.com/gpu: 1 → OOMKilled (exit 137)\tcontrol\x00chars",
    "",
])
def test_pieces_and_edge_cases_match_llama_cpp(llama_counter: LlamaCppCounter, text: str) -> None:
    counter = knowledge.token_counter()
    assert counter.tokens(text) == llama_counter.tokens(text)
    # the same pieces, except that an unknown character shows as [UNK] where llama.cpp shows nothing
    assert [p if p != " [UNK]" else "" for p in counter.pieces(text)] == llama_counter.pieces(text)


def test_counting_needs_neither_llama_cpp_nor_a_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the agent's pod: `import llama_cpp` fails, HOME does not exist, no model cache (and none is made)."""
    home = tmp_path / "nonexistent"  # not /nonexistent itself: this test runs as whoever runs the suite
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("WORKSHOP_CACHE_DIR", str(home / ".cache"))
    from helpers import config

    config.reload_settings()
    knowledge.token_counter.cache_clear()
    try:
        counter = knowledge.token_counter()
        assert counter.count("Why is my GPU pod stuck in Pending?") == 12
        assert not home.exists()  # no model was fetched into a cache
    finally:
        knowledge.token_counter.cache_clear()
        monkeypatch.undo()
        config.reload_settings()


def test_the_vocabulary_file_is_the_pinned_one() -> None:
    filename, sha256 = knowledge.VOCABULARIES["all-minilm-l6-v2-f16"]
    path = knowledge.DATA_DIR / filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert len(path.read_text(encoding="utf-8").splitlines()) == 30522  # config.json's vocab_size
    assert (knowledge.DATA_DIR / "all-MiniLM-L6-v2.vocab.NOTICE").read_text().count("Apache License")


def test_a_changed_vocabulary_is_refused(tmp_path: Path) -> None:
    filename, sha256 = knowledge.VOCABULARIES["all-minilm-l6-v2-f16"]
    copy = tmp_path / filename
    copy.write_text((knowledge.DATA_DIR / filename).read_text(encoding="utf-8") + "extra\n", encoding="utf-8")
    with pytest.raises(knowledge.KnowledgeError, match="sha256"):
        knowledge.TokenCounter(copy, sha256)


def test_an_embedding_model_without_a_vocabulary_is_a_clear_error() -> None:
    with pytest.raises(knowledge.KnowledgeError, match="no WordPiece vocabulary"):
        knowledge.token_counter("some-other-embedding-model")
