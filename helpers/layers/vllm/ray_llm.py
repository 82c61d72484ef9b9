"""vLLM inside Ray Serve: the on-demand alternative to chapter 02's plain vLLM Deployment for the reasoning model.

The RayService is `manifests/03-ray-serve/on-demand/ray-llm-reasoning.yaml.j2` (Ray Serve's LLM API,
`ray.serve.llm:build_openai_app`, on the gpu pool) with the `ray_llm` block of chapter 03's parameters. It serves the
same model under the same name ("reasoning"), so chapter 04's gateway changes one parameter (`gateway_overrides`).
The trade-offs against the plain Deployment are data (`ray-llm-tradeoffs.yaml`), the cost is computed from the
rendered manifests and the committed price table (`cost_comparison`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import yaml

from helpers.infra.manifests import MANIFESTS_DIR, Manifest, chapter_parameters

if TYPE_CHECKING:
    from helpers.target import Target

CHAPTER = "03-ray-serve"
TEMPLATE = "on-demand/ray-llm-reasoning.yaml.j2"
TRADEOFFS = MANIFESTS_DIR / CHAPTER / "ray-llm-tradeoffs.yaml"
PLAIN_CHAPTER = "02-vllm"
PLAIN_SERVER = "vllm-reasoning"
GATEWAY_CHAPTER = "04-gateway"
SERVE_PORT = 8000


def parameters() -> dict[str, Any]:
    """The `ray_llm` block of chapter 03's parameters."""
    return chapter_parameters(CHAPTER)["ray_llm"]


def serve_service(params: dict[str, Any] | None = None) -> str:
    """The name of the Service in front of the Serve proxies (the RayService's serveService)."""
    return f"{(params or parameters())['name']}-serve-svc"


def render(t: Target, overrides: dict[str, Any] | None = None) -> list[Manifest]:
    """The RayService and its NetworkPolicy for the target (chapter 03's on-demand template only)."""
    items = t.render(CHAPTER, overrides=overrides, include_on_demand=True)
    return [m for m in items if m.template == TEMPLATE]


def template_text(t: Target) -> str:
    """The template rendered with its comments: what the notebook shows as the explanation."""
    return t.render_text(TEMPLATE, chapter=CHAPTER)


def rayservice(items: list[Manifest]) -> dict[str, Any]:
    """The RayService object among rendered items."""
    return next(m.doc for m in items if m.kind == "RayService" and m.template == TEMPLATE)


def serve_config(items: list[Manifest]) -> dict[str, Any]:
    """The Serve config KubeRay submits (serveConfigV2, parsed)."""
    return yaml.safe_load(rayservice(items)["spec"]["serveConfigV2"])


def llm_config(items: list[Manifest]) -> dict[str, Any]:
    """The one LLMConfig of the app (Ray Serve LLM's per-model settings)."""
    return serve_config(items)["applications"][0]["args"]["llm_configs"][0]


def gateway_overrides(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Chapter 04's one-parameter switch: the reasoning route goes to the RayService's Serve Service."""
    return {"routes": {"reasoning": {"eks_service": serve_service(params)}}}


def tradeoffs() -> dict[str, Any]:
    """The trade-offs data (columns and rows) from ray-llm-tradeoffs.yaml."""
    return yaml.safe_load(TRADEOFFS.read_text())


def tradeoffs_table() -> list[dict[str, str]]:
    """One row per aspect, one column per way of serving: a notebook table."""
    data = tradeoffs()
    names = data["columns"]
    return [{"aspect": row["aspect"], names["plain"]: row["plain"], names["ray"]: row["ray"]} for row in data["rows"]]


# ---------------------------------------------------------------- placement and cost, next to the plain Deployment


def plain_items(t: Target) -> list[Manifest]:
    """Chapter 02's reasoning server (its Deployment and the objects beside it), rendered for the target."""
    return [m for m in t.render(PLAIN_CHAPTER) if m.name == PLAIN_SERVER]


def alternatives(t: Target) -> dict[str, list[Manifest]]:
    """The two ways of serving the reasoning model, as rendered objects."""
    return {"vLLM Deployment (chapter 02)": plain_items(t), "vLLM in Ray Serve (RayService)": render(t)}


def placements(t: Target) -> list[dict[str, str]]:
    """Where the scheduler puts each pod of both alternatives (pool, cheapest instance types, why not the others)."""
    from helpers.infra import scheduling

    pools = scheduling.node_pools(t)
    rows = []
    for label, items in alternatives(t).items():
        for placement in scheduling.explain(scheduling.workloads_from_manifests(items), pools):
            rows.append({"serving": label, **placement.row()})
    return rows


def _serving_cost(report: Any) -> Decimal:
    """A cost report without the cluster fee: what the serving alternative itself adds per hour."""
    from helpers.infra.scheduling import EKS_CLUSTER_PER_HOUR

    return report.total - EKS_CLUSTER_PER_HOUR


def cost_comparison(t: Target) -> list[dict[str, str]]:
    """$/hour of each alternative at its minimum and maximum replicas (nodes and root volumes, no cluster fee)."""
    from helpers.infra import scheduling

    pools = scheduling.node_pools(t)
    rows = []
    for label, items in alternatives(t).items():
        workloads = scheduling.workloads_from_manifests(items)
        low = scheduling.platform_cost(workloads, pools)
        high = scheduling.platform_cost(workloads, pools, at="max")
        nodes = [f"{p.pool}: {p.instance_type}" for p in low.parts if p.pool != "-" and "root volume" not in p.item]
        rows.append({
            "serving": label,
            "pods (min)": ", ".join(f"{w.name} x{w.replicas}" for w in workloads),
            "nodes (min)": "; ".join(nodes),
            "$/h at min": f"{_serving_cost(low):.2f}",
            "$/h at max": f"{_serving_cost(high):.2f}",
            "unplaced": ", ".join(low.unplaced) or "none",
        })
    return rows
