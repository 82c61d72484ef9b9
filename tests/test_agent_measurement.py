"""The routing measurement notebook 08 shows: tools/bench_agent.py writes it from its results (any path), and the
committed file holds both modes on every question of the set."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers.config import ROOT
from helpers.layers.agent import supervisor

sys.path.insert(0, str(ROOT / "tools"))

import bench_agent  # noqa: E402 - tools/ is not a package


def result(qid: str, routing: str, expected: str, route: str) -> dict[str, object]:
    return {"id": qid, "routing": routing, "expected": expected, "route": route, "correct": route == expected,
            "relevance": 1.0, "tools": [], "total_s": 1.23456, "first_token_s": 0.5, "timings": {}, "steps": [],
            "cache_hits": 0}


def test_write_measurement_takes_a_relative_path_and_keeps_only_what_the_notebook_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bench_agent.write_measurement(Path("out/routing.json"), [result("q1", "code", "web_search", "web_search")])
    data = json.loads((tmp_path / "out" / "routing.json").read_text())
    assert data["results"] == [{"id": "q1", "routing": "code", "expected": "web_search", "route": "web_search",
                                "correct": True, "relevance": 1.0, "tools": [], "total_s": 1.23,
                                "first_token_s": 0.5, "cache_hits": 0}]
    assert data["machine"]["cpus"] == os.cpu_count() and str(tmp_path) in data["measured_by"]


def test_the_committed_measurement_covers_both_modes_on_the_whole_set() -> None:
    data = json.loads(bench_agent.MEASURED.read_text())
    ids = {q["id"]: q["route"] for q in supervisor.load_questions()}
    for mode in ("code", "model"):
        mine = {r["id"]: r for r in data["results"] if r["routing"] == mode}
        assert set(mine) == set(ids), f"{mode}: run make bench-agent again (the question set changed)"
        assert all(r["expected"] == ids[q] and r["correct"] == (r["route"] == r["expected"]) for q, r in mine.items())
    assert "/" not in data["measured_by"].split("--json ")[1][:1], "no machine path in the committed file"
