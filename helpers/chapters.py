"""The workshop's chapters in teaching order (helpers/data/chapters.yaml): one id per notebook and manifest folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from helpers.errors import WorkshopError

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS_FILE = ROOT / "helpers" / "data" / "chapters.yaml"
NOTEBOOKS_DIR = ROOT / "notebooks"
MANIFESTS_DIR = ROOT / "manifests"


@dataclass(frozen=True)
class Chapter:
    """One chapter: its id (notebook stem = manifest folder), what it builds, what stands in locally, what it needs."""

    id: str
    title: str
    builds: str
    local: str
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    stops: tuple[str, ...] = ()

    @property
    def number(self) -> str:
        """The two-digit number, e.g. "03"."""
        return self.id[:2]

    @property
    def notebook(self) -> Path:
        """notebooks/<id>.ipynb."""
        return NOTEBOOKS_DIR / f"{self.id}.ipynb"

    @property
    def manifests(self) -> Path:
        """manifests/<id>/ (it may not exist: not every chapter applies objects)."""
        return MANIFESTS_DIR / self.id

    def services(self, target: str) -> tuple[str, ...]:
        """The local services this chapter's set-up ensures on a target."""
        return self.needs.get(target, ())


@lru_cache(maxsize=1)
def all_chapters() -> tuple[Chapter, ...]:
    """Every chapter, in teaching order."""
    rows = yaml.safe_load(CHAPTERS_FILE.read_text())
    return tuple(
        Chapter(id=r["id"], title=r["title"], builds=r["builds"], local=r["local"],
                needs={t: tuple(s) for t, s in (r.get("needs") or {}).items()}, stops=tuple(r.get("stops") or ()))
        for r in rows
    )


def ids() -> list[str]:
    """The chapter ids in teaching order."""
    return [c.id for c in all_chapters()]


def get(chapter_id: str) -> Chapter:
    """A chapter by id (or by its two-digit number), or a clear error listing the ids."""
    for chapter in all_chapters():
        if chapter_id in (chapter.id, chapter.number):
            return chapter
    raise WorkshopError(f"Unknown chapter {chapter_id!r}.", f"Use one of: {', '.join(ids())}.")


def with_manifests() -> list[str]:
    """The ids of the chapters that have a manifest folder with templates, in teaching order."""
    return [c.id for c in all_chapters() if c.manifests.is_dir() and any(c.manifests.rglob("*.yaml.j2"))]


def rank(chapter_id: str) -> int:
    """The position of a chapter in teaching order."""
    return ids().index(get(chapter_id).id)


def table() -> list[dict[str, str]]:
    """One row per chapter: notebook, what you build, what runs locally (notebook 00 and the book show it)."""
    return [{"notebook": c.id, "you build": c.builds, "runs locally as": c.local} for c in all_chapters()]
