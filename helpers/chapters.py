"""The workshop's notebooks in teaching order, with what each one builds."""

from __future__ import annotations

CHAPTERS: list[tuple[str, str, str]] = [
    ("00-welcome", "the map, a preflight check, a first request", "llama.cpp server"),
    ("01-cluster-and-nodepools", "EKS cluster, Karpenter node pools, storage, operators, cost", "rendered and validated manifests"),
    ("02-vllm", "vLLM on GPUs, a GPU memory planner", "llama.cpp server (stand-in for vLLM)"),
    ("03-ray-serve", "Ray Serve + llama.cpp on CPUs (KubeRay)", "the same app under a local Ray"),
    ("04-gateway", "LiteLLM gateway: routes, fallbacks, cache, PII guardrail", "the real LiteLLM proxy"),
    ("05-observability", "one trace per request: Langfuse, Prometheus", "Arize Phoenix"),
    ("06-vector-index", "knowledge base, idempotent ingestion, OpenSearch k-NN", "Milvus Lite"),
    ("07-mcp-tools", "MCP servers: web search, sandboxed filesystem", "the same MCP servers"),
    ("08-supervisor-agent", "Strands supervisor agent with RAGAs relevance routing", "the same agent"),
    ("09-evaluate-and-benchmark", "RAGAs evaluation, serving benchmark, cost per token", "the same harness"),
    ("10-cleanup", "teardown that touches only what the workshop created", "stop the local stack"),
]
