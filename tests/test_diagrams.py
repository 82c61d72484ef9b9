"""Tests for helpers.diagrams: the architecture figure builds for each target, names every component, stays tidy."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.text
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from helpers import diagrams

COMMON = ("Client / notebook", "Strands supervisor agent", "agent API", "MCP servers", "web search", "filesystem",
          "LiteLLM gateway", "Redis cache", "PII guardrail", "Ray Serve + llama.cpp", "embeddings", "OTLP",
          "request path", "OTLP traces", "model hosting", "gateway", "data", "agent", "observability")
LOCAL = ("local — one laptop", "llama.cpp server", "stand-in for vLLM", "local Ray", "Milvus Lite", "Arize Phoenix",
         "master key")
EKS = ("eks — Amazon EKS", "vLLM · Qwen3-14B", "TP=4 on 4 GPUs", "pool: gpu", "vLLM vision", "Qwen2.5-VL-7B",
       "TP=1 on 1 GPU", "optional: DEPLOY_VISION", "virtual keys",
       "KubeRay RayService", "pool: graviton", "Amazon OpenSearch", "k-NN", "Langfuse", "Karpenter node pools",
       "gpu", "graviton", "x86", "inf2")


def _texts(fig: Figure) -> list[matplotlib.text.Text]:
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()]


@pytest.mark.parametrize(("target", "expected", "absent"), [
    (None, COMMON + LOCAL + EKS, ()),
    ("local", COMMON + LOCAL, ("Langfuse", "vLLM vision", "Karpenter node pools", "virtual keys")),
    ("eks", COMMON + EKS, ("Milvus Lite", "Arize Phoenix", "llama.cpp server")),
])
def test_figure_has_expected_labels(target: str | None, expected: tuple[str, ...], absent: tuple[str, ...]) -> None:
    fig = diagrams.architecture_figure(target)
    assert isinstance(fig, Figure)
    labels = {t.get_text() for t in _texts(fig)}
    everything = "\n".join(labels)
    for label in expected:
        assert label in everything, f"{label!r} missing from the {target} figure"
    for label in absent:
        assert label not in everything, f"{label!r} should not be in the {target} figure"
    assert len(fig.axes) == (2 if target is None else 1)


@pytest.mark.parametrize("target", [None, "local", "eks"])
def test_no_text_overlaps(target: str | None) -> None:
    fig = diagrams.architecture_figure(target)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    extents = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
    fig_box = fig.bbox
    for text, box in extents:
        assert fig_box.x0 <= box.x0 and box.x1 <= fig_box.x1 and fig_box.y0 <= box.y0 and box.y1 <= fig_box.y1, text
    clashes = [(a, b) for (a, ea), (b, eb) in itertools.combinations(extents, 2) if ea.overlaps(eb)]
    assert clashes == []


def test_side_by_side_is_wide_enough_for_1400_px() -> None:
    width, height = diagrams.architecture_figure().get_size_inches()
    assert 1400 / width >= 90  # at 1400 px wide, >= 90 px per inch: 8.3 pt labels stay >= 10 px tall
    assert width > height


def test_save_is_reproducible(tmp_path: Path) -> None:
    for suffix in ("png", "svg"):
        first = diagrams.save_architecture(tmp_path / f"a.{suffix}")
        second = diagrams.save_architecture(tmp_path / f"b.{suffix}")
        assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "a.svg").read_text()
    assert "<dc:date>" not in svg


def test_unknown_target() -> None:
    with pytest.raises(ValueError):
        diagrams.architecture_figure("gke")
