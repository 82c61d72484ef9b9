"""Offline checks of the scheduling explainer and the platform cost."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from helpers.infra import scheduling as s
from helpers.infra.aws import load_instance_types
from helpers.config import Settings
from helpers.infra.manifests import Manifest, render_chapter

SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop")
TABLE = load_instance_types()

EXPECTED_POOL = {
    "vllm-reasoning": "gpu",
    "vllm-vision": "gpu",
    "ray-head": "graviton",
    "ray-cpu-worker": "graviton",
    "litellm": "graviton",
    "langfuse-web": "graviton",
    "langfuse-worker": "graviton",
    "langfuse-clickhouse": "graviton",
    "langfuse-postgresql": "graviton",
    "langfuse-redis": "graviton",
    "agent": "x86",
    "mcp-web-search": "x86",
    "mcp-filesystem": "x86",
}


@pytest.fixture(scope="module", params=["auto-mode", "karpenter"])
def pools(request: pytest.FixtureRequest) -> list[s.Pool]:
    return s.pools_from_manifests(render_chapter(s.NODEPOOL_CHAPTER, flavour=request.param, settings=SETTINGS))


def test_pools_are_read_from_the_rendered_nodepools(pools: list[s.Pool]) -> None:
    by_name = {p.name: p for p in pools}
    assert set(by_name) == {"gpu", "graviton", "x86", "inf2"}
    assert by_name["graviton"].architectures == {"arm64"}
    assert {t["key"] for t in by_name["gpu"].taints} == {"nvidia.com/gpu"}
    assert by_name["gpu"].root_volume and by_name["gpu"].root_volume.size_gib == 300
    gpu_types = {t.instance_type for t in by_name["gpu"].instance_types(TABLE)}
    assert gpu_types == {"g5.12xlarge", "g5.24xlarge", "g6.12xlarge", "g6.24xlarge"}
    assert all(
        t.arch == "arm64" and t.generation > 6 and t.category in "cmr"
        for t in by_name["graviton"].instance_types(TABLE)
    )
    assert {t.family for t in by_name["inf2"].instance_types(TABLE)} == {"inf2"}


def test_changing_the_manifest_changes_the_explanation() -> None:
    """One source of truth: drop the GPU taint in the parameters and the explainer sees it at once."""
    rendered = render_chapter(s.NODEPOOL_CHAPTER, flavour="auto-mode", settings=SETTINGS)
    untainted_pools = [dict(m.doc) for m in rendered]
    for doc in untainted_pools:
        if doc["kind"] == "NodePool" and doc["metadata"]["name"] == "gpu":
            doc["spec"] = {
                **doc["spec"],
                "template": {**doc["spec"]["template"], "spec": {**doc["spec"]["template"]["spec"], "taints": []}},
            }
    pools = s.pools_from_manifests(untainted_pools)
    no_toleration = replace(s.WORKLOADS[0], name="careless", tolerations=())
    verdict = s.pool_verdict(no_toleration, next(p for p in pools if p.name == "gpu"), TABLE)
    assert verdict.fits


def test_every_workload_lands_in_the_expected_pool(pools: list[s.Pool]) -> None:
    placements = s.explain(s.WORKLOADS, pools, TABLE)
    assert {p.workload.name: p.pool for p in placements} == EXPECTED_POOL
    for placement in placements:
        chosen = next(v for v in placement.verdicts if v.pool == placement.pool)
        assert chosen.fits and chosen.cheapest, placement.workload.name
        prices = [price for _name, price in chosen.cheapest]
        assert prices == sorted(prices)
        for verdict in placement.verdicts:
            if verdict.pool != placement.pool and not verdict.fits:
                assert verdict.reason


def test_reasons_name_the_taint_the_architecture_and_the_resources(pools: list[s.Pool]) -> None:
    by_name = {p.workload.name: p for p in s.explain(s.WORKLOADS, pools, TABLE)}
    reasoning = {v.pool: v.reason for v in by_name["vllm-reasoning"].verdicts}
    assert "taint aws.amazon.com/neuron:NoSchedule not tolerated" in reasoning["inf2"]
    assert "architecture" in reasoning["graviton"]
    litellm = {v.pool: v.reason for v in by_name["litellm"].verdicts}
    assert "taint nvidia.com/gpu:NoSchedule not tolerated" in litellm["gpu"]
    assert "taint llm-eks-workshop/pool=x86:NoSchedule not tolerated" in litellm["x86"]
    agent = {v.pool: v.reason for v in by_name["agent"].verdicts}
    assert "architecture" in agent["graviton"]
    greedy = replace(s.WORKLOADS[0], name="eight-gpus", gpus=8)
    verdict = s.pool_verdict(greedy, next(p for p in pools if p.name == "gpu"), TABLE)
    assert not verdict.fits and verdict.reason.startswith("resources:") and "8 GPU > 4" in verdict.reason


def test_a_gpu_pod_without_toleration_stays_pending(pools: list[s.Pool]) -> None:
    careless = replace(s.WORKLOADS[0], name="careless", tolerations=())
    placement = s.explain([careless], pools, TABLE)[0]
    assert placement.pool is None
    assert "nvidia.com/gpu" in {v.pool: v.reason for v in placement.verdicts}["gpu"]
    assert placement.row()["pool"].startswith("NONE")


def test_cheapest_gpu_instance_is_a_4_gpu_g6(pools: list[s.Pool]) -> None:
    reasoning = s.explain([s.WORKLOADS[0]], pools, TABLE)[0]
    gpu = next(v for v in reasoning.verdicts if v.pool == "gpu")
    assert gpu.cheapest[0] == ("g6.12xlarge", TABLE["g6.12xlarge"].price_usd_per_hour)


def test_platform_cost_equals_the_sum_of_its_parts_and_cites_prices(pools: list[s.Pool]) -> None:
    report = s.platform_cost(s.WORKLOADS, pools, TABLE)
    assert report.unplaced == ()
    assert report.total == sum(p.hourly for p in report.parts)
    rows = report.rows()
    assert Decimal(rows[-1]["$/h"]) == sum(Decimal(r["$/h"]) for r in rows[:-1]), (
        "shown parts add up to the shown total"
    )
    nodes = [p for p in report.parts if p.item.endswith(tuple("0123456789")) and p.pool != "-"]
    for part in nodes:
        assert part.instance_type in TABLE and part.unit_price == TABLE[part.instance_type].price_usd_per_hour
        assert part.source and part.hosts
    gpu_nodes = [p for p in nodes if p.pool == "gpu"]
    assert len(gpu_nodes) == 2, "the GPU nodes are part of the cost (4-GPU reasoning node + vision node)"
    assert sum(p.hourly for p in gpu_nodes) > report.total / 2
    hosted = {name.split(" x")[0] for p in nodes for name in p.hosts}
    assert hosted == set(EXPECTED_POOL)
    assert any(p.item == "EKS cluster (control plane)" for p in report.parts)
    assert any("root volume" in p.item for p in report.parts)


def test_cost_at_max_replicas_is_not_lower(pools: list[s.Pool]) -> None:
    assert (
        s.platform_cost(s.WORKLOADS, pools, TABLE, at="max").total >= s.platform_cost(s.WORKLOADS, pools, TABLE).total
    )


def test_vcpus_by_quota_class(pools: list[s.Pool]) -> None:
    needed = s.platform_cost(s.WORKLOADS, pools, TABLE).vcpus_by_quota()
    assert needed["gpu"] == 96 and needed["standard"] > 0 and needed["inferentia"] == 0


def test_spend_caps_follow_the_limits(pools: list[s.Pool]) -> None:
    caps = {c.pool: c for c in s.spend_caps(pools, TABLE)}
    assert caps["gpu"].max_nodes == 2  # nvidia.com/gpu: 8 => two 4-GPU nodes at most
    assert caps["gpu"].max_hourly == 2 * TABLE[caps["gpu"].worst_instance_type].price_usd_per_hour
    assert caps["inf2"].max_nodes >= 1


def test_allocatable_is_less_than_capacity() -> None:
    g6 = TABLE["g6.12xlarge"]
    room = s.allocatable(g6)
    assert 47 < room.cpu < 48 and 170 < room.memory_gib < 192 and room.gpus == 4
    assert s.kube_reserved_cpu_m(1) == 60 and s.kube_reserved_cpu_m(4) == 80


def test_quantities() -> None:
    assert s.quantity_cpu("500m") == 0.5 and s.quantity_cpu("2") == 2
    assert s.quantity_gib("512Mi") == 0.5 and s.quantity_gib("64Gi") == 64


def test_a_chapters_manifests_replace_its_planned_workloads(pools: list[s.Pool]) -> None:
    """Once a chapter ships manifests, the explainer and the cost read that chapter's workloads from them."""
    labels = {"app.kubernetes.io/part-of": "llm-eks-workshop"}
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.11.0",
        "resources": {
            "requests": {"cpu": "12", "memory": "48Gi", "nvidia.com/gpu": 4},
            "limits": {"cpu": "12", "memory": "48Gi", "nvidia.com/gpu": 4},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "vllm-qwen3", "namespace": "llm-workshop", "labels": labels},
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"karpenter.sh/nodepool": "gpu", "kubernetes.io/arch": "amd64"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [container],
                },
            },
        },
    }
    item = Manifest(chapter="02-vllm", template="vllm.yaml.j2", doc=deployment)
    workloads = s.platform_workloads([item])
    names = {w.name for w in workloads}
    assert "vllm-qwen3" in names and "vllm-reasoning" not in names and "vllm-vision" not in names
    assert "ray-head" in names, "chapters without manifests keep their planned workloads"
    qwen = next(w for w in workloads if w.name == "vllm-qwen3")
    assert (qwen.cpu_cores, qwen.memory_gib, qwen.gpus, qwen.image_architectures) == (12, 48, 4, ("amd64",))
    assert {p.workload.name: p.pool for p in s.explain(workloads, pools, TABLE)}["vllm-qwen3"] == "gpu"
    report = s.platform_cost(workloads, pools, TABLE)
    assert report.total == sum(p.hourly for p in report.parts)
    assert len([p for p in report.parts if p.pool == "gpu" and "root" not in p.item]) == 1


def test_every_workload_of_the_rendered_workshop_finds_a_pool() -> None:
    """With the defaults (the rendered manifests of every chapter), nothing would stay Pending."""
    assert s.platform_workloads()
    report = s.platform_cost()
    assert report.total > 0 and report.unplaced == ()
