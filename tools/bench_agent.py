"""Supervisor agent figures (notebook 08): routing accuracy on the question set, end-to-end latency in the KB.

    .venv/bin/python tools/bench_agent.py          # on an isolated stack of its own (state folder, ports)

`bench_agent(settings)` returns the report rows for tools/bench.py (which sets up the isolated stack itself):
- routing accuracy: every question of helpers/data/agent_questions.yaml asked once through the full supervisor
  (gateway, RAGAs judge, Milvus Lite, web-search MCP), route compared with the expected one; target >= 90 %.
- latency: median end-to-end seconds of the knowledge-base questions (Supervisor.ask, total); target <= 20 s on
  2 cores. The gateway's response cache starts empty in an isolated stack, so nothing is answered from cache.
Judge parse failures (the embedding fallback) are counted and reported beside them.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROUTING_TARGET = 0.90
LATENCY_TARGET_S = 20.0


def run_questions(settings: Any = None, progress: bool = True) -> list[dict[str, Any]]:
    """Ask every question of the set once; one dict per question (route, expected, relevance, timings)."""
    sys.path.insert(0, str(ROOT))
    from tqdm import tqdm

    from helpers import config
    from helpers.layers.agent import supervisor as agent
    from helpers.layers.rag import knowledge
    from helpers.local import stack
    from helpers.target import Target

    settings = settings or config.get_settings()
    for name in ("gateway", "mcp-web-search", "mcp-filesystem"):
        stack.ensure(name)
    sup = agent.build_supervisor(Target("local", settings))  # gateway, Milvus Lite and MCP servers of this stack
    try:
        knowledge.ingest(sup.store, sup.embedder, progress=False)  # idempotent: writes nothing when up to date
        results = []
        for q in tqdm(agent.load_questions(), desc="questions", disable=not progress):
            a = sup.ask(q["question"])
            results.append({"id": q["id"], "expected": q["route"], "route": a.route,
                            "correct": a.route == q["route"], "relevance": a.relevance["score"],
                            "method": a.relevance["method"], "judge_failures": a.relevance["judge_failures"],
                            "judged": a.relevance.get("judged", 0),
                            "top_similarity": a.relevance.get("top_similarity"), "total_s": a.timings["total"],
                            "timings": a.timings})
        return results
    finally:
        sup.close()


def summarise(results: list[dict[str, Any]]) -> list[dict[str, object]]:
    """Report rows from the per-question results."""
    from bench import row  # imported here, so tools/bench.py may import this module at its top

    accuracy = sum(r["correct"] for r in results) / len(results)
    kb = [r["total_s"] for r in results if r["expected"] == "knowledge_base"]
    median = statistics.median(kb)
    failures = sum(r["judge_failures"] for r in results)
    judged = sum(r["judged"] for r in results)  # verdicts the judge was asked for
    wrong = ", ".join(r["id"] for r in results if not r["correct"]) or "none"
    return [
        row("agent routing accuracy (local 0.5B model)", f"{accuracy:.0%} of {len(results)} (wrong: {wrong})"[:34],
            f">= {ROUTING_TARGET:.0%}", accuracy >= ROUTING_TARGET),
        row("agent latency, KB question, median", f"{median:.1f} s (n={len(kb)})", f"<= {LATENCY_TARGET_S:.0f} s on 2 cores",
            median <= LATENCY_TARGET_S),
        row("agent judge parse failures (fallback used)", f"{failures} of {judged} verdicts", "reported", None),
    ]


def bench_agent(settings: Any = None) -> list[dict[str, object]]:
    """Routing accuracy and median KB latency of the supervisor on the current (bench: isolated) stack."""
    return summarise(run_questions(settings, progress=False))


def main() -> int:
    """Run on an isolated stack and print the rows and the per-question table."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools"))
    import os

    from bench import isolated_env, print_rows

    os.environ.update(isolated_env())
    from helpers import config
    from helpers.local import stack

    try:
        results = run_questions(config.reload_settings())
    finally:
        stack.down()
    for r in results:
        print(f"{r['id']:22} expected={r['expected']:15} got={r['route']:15} rel={r['relevance']:.2f} "
              f"{r['method']:15} fails={r['judge_failures']} sim={r['top_similarity']} total={r['total_s']:.1f}s "
              + " ".join(f"{k}={v:.1f}" for k, v in r["timings"].items() if k != "total"))
    print_rows(summarise(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
