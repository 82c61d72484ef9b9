"""Knowledge-base figures (issue 6): ingestion throughput vs raw embedding throughput, and recall@5.

Runs its own stack (state folder and ports of its own) when run alone, so it never disturbs a workshop:

    .venv/bin/python tools/bench_knowledge.py

`bench_ingest()` returns the report rows for tools/bench.py (which sets up the isolated stack itself).

- Raw embedding throughput: the knowledge base's chunk texts POSTed straight to the embedding server, in the
  same batches as ingestion, with nothing else done (chunks per second).
- Ingestion throughput: `helpers.layers.rag.knowledge.ingest` from the Markdown files into an empty Milvus Lite
  collection (chunking, token counting, embedding through the same server, vector checks, writes, deletes,
  flush and index build), chunks written per second of the whole run.
Both are measured twice, interleaved, so drift in machine load hits both alike; the medians are compared.
The ingestion here talks to the embedding server directly: through the gateway, its response cache would
answer repeated texts and overstate ingestion throughput.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench import isolated_stack, row  # noqa: E402  (one report format, one way to isolate a stack)

ROUNDS = 2
RATIO_TARGET = 0.7
RECALL_TARGET = 0.95
K = 5


def bench_ingest() -> list[dict[str, object]]:
    """Ingestion vs raw embedding throughput (same model, same server, same run) and recall@5 of the index."""
    sys.path.insert(0, str(ROOT))
    from helpers import config
    from helpers.layers.rag import knowledge
    from helpers.layers.rag.stores import recall_at_k
    from helpers.layers.rag.stores.milvus import MilvusStore
    from helpers.local import stack
    from helpers.target import Endpoint

    settings = config.reload_settings()
    stack.ensure("embedding-server")
    endpoint = Endpoint(settings.embedding_server_url, settings.model_server_api_key,
                        settings.served_embedding_model, "embedding server (llama.cpp, direct)")
    embedder = knowledge.Embedder(endpoint)
    documents = knowledge.load_documents()
    counter = knowledge.token_counter()
    texts = [c.embedding_text for d in documents for c in knowledge.chunk_document(d, counter)]
    batch = knowledge.BATCH_SIZE
    embedder.embed(texts[:batch])  # warm the server once

    def raw() -> float:
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            embedder.embed(texts[i:i + batch])
        return len(texts) / (time.perf_counter() - start)

    def ingestion(folder: Path) -> tuple[float, MilvusStore]:
        store = MilvusStore(folder / "knowledge.db")
        report = knowledge.ingest(store, embedder, documents, counter=counter, progress=False)
        assert report.chunks_written == len(texts) == report.chunks_total
        return report.chunks_written / report.seconds, store

    raw_rates, ingest_rates = [], []
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as tmp:
        store = None
        for n in range(ROUNDS):
            raw_rates.append(raw())
            if store is not None:
                store.close()
            rate, store = ingestion(Path(tmp) / f"round{n}")
            ingest_rates.append(rate)
        questions = [q for q, _ in knowledge.QUESTIONS] + [d.title for d in documents]
        recall = recall_at_k(store, embedder.embed(questions), k=K)
        store.close()
    r, i = statistics.median(raw_rates), statistics.median(ingest_rates)
    ratio = i / r
    return [
        row("ingestion / raw embedding throughput", f"{i:.1f} / {r:.1f} chunks/s = {ratio:.2f}x "
            f"({len(texts)} chunks)", f">= {RATIO_TARGET}x", ratio >= RATIO_TARGET),
        row(f"recall@{K}, HNSW vs brute force", f"{recall.recall:.3f} ({recall.n_queries} queries, "
            f"{recall.n_vectors} vectors)", f">= {RECALL_TARGET}", recall.recall >= RECALL_TARGET),
    ]


def main() -> int:
    """Run the knowledge bench in an isolated stack and print its rows."""
    with isolated_stack():
        rows = bench_ingest()
    for r in rows:
        verdict = {True: "ok", False: "MISSED", None: "info"}[r["ok"]]
        print(f"{r['figure']:38}  {r['value']:52}  {r['target']:8}  {verdict}")
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
