"""The agent's question set (helpers/data/agent_questions.yaml): half answered by the knowledge base, half not."""

from __future__ import annotations

from typing import Any

from helpers.config import ROOT

QUESTIONS_FILE = ROOT / "helpers" / "data" / "agent_questions.yaml"


def load_questions(path: Any = None) -> list[dict[str, Any]]:
    """The agent's question set: dicts with id, question, route and (knowledge-base ones) source and reference."""
    import yaml

    with open(path or QUESTIONS_FILE, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    questions = list(data["questions"])
    for q in questions:
        if q.get("route") not in ("knowledge_base", "web_search") or not q.get("question"):
            raise ValueError(f"question {q.get('id')!r}: needs a question and a route knowledge_base|web_search")
    return questions
