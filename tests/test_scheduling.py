"""Offline checks of the scheduling explainer and the platform cost."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from helpers.config import Settings
from helpers.infra import scheduling as s
from helpers.infra.aws import load_instance_types
from helpers.infra.manifests import Manifest, render_chapter
from helpers.target import Target

SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop")
TABLE = load_instance_types()

# Every workload of the rendered eks manifests (chapters 02-08) plus the Helm releases' pods (helm-workloads.yaml).
EXPECTED_POOL = {
    "vllm-reasoning": "gpu",
    "vllm-vision": "gpu",
    "ray-serve-head": "graviton",
    "ray-serve-worker-cpu": "graviton",
    "litellm": "graviton",
    "litellm-redis": "graviton",
    "litellm-postgres": "graviton",
    "langfuse-web": "graviton",
    "langfuse-worker": "graviton",
    "langfuse-clickhouse": "graviton",
    "langfuse-postgresql": "graviton",
    "langfuse-redis": "graviton",
    "langfuse-s3-all-in-one": "graviton",
    "langfuse-keeper": "graviton",
    "supervisor-agent": "graviton",
    "mcp-web-search": "graviton",
    "mcp-filesystem": "graviton",
}


@pytest.fixture(scope="module", params=["auto-mode", "karpenter"])
def target(request: pytest.FixtureRequest) -> Target:
    return Target("eks", SETTINGS, flavour=request.param)


@pytest.fixture(scope="module")
def pools(target: Target) -> list[s.Pool]:
    return s.node_pools(target)


@pytest.fixture(scope="module")
def workloads(target: Target) -> list[s.Workload]:
    return s.platform_workloads(target.render_all())


def named(workloads: list[s.Workload]) -> dict[str, s.Workload]:
    return {w.name: w for w in workloads}


def amd64_only(workloads: list[s.Workload]) -> s.Workload:
    """The agent as an image built for linux/amd64 only: it must select amd64 and tolerate the x86 pool's taint."""
    return replace(
        named(workloads)["supervisor-agent"],
        name="amd64-agent",
        node_selector={"kubernetes.io/arch": "amd64"},
        tolerations=(s.X86_TOLERATION,),
        image_architectures=("amd64",),
    )


def test_pools_are_read_from_the_rendered_nodepools(target: Target, pools: list[s.Pool]) -> None:
    assert pools == s.pools_from_manifests(render_chapter(s.NODEPOOL_CHAPTER, "eks", target.flavour, settings=SETTINGS))
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


def test_changing_the_manifest_changes_the_explanation(target: Target, workloads: list[s.Workload]) -> None:
    """One source of truth: drop the GPU taint in the rendered NodePool and the explainer sees it at once."""
    rendered = target.render(s.NODEPOOL_CHAPTER)
    untainted_pools = [dict(m.doc) for m in rendered]
    for doc in untainted_pools:
        if doc["kind"] == "NodePool" and doc["metadata"]["name"] == "gpu":
            doc["spec"] = {
                **doc["spec"],
                "template": {**doc["spec"]["template"], "spec": {**doc["spec"]["template"]["spec"], "taints": []}},
            }
    pools = s.pools_from_manifests(untainted_pools)
    no_toleration = replace(named(workloads)["vllm-reasoning"], name="careless", tolerations=())
    tainted = next(p for p in s.pools_from_manifests(rendered) if p.name == "gpu")
    assert not s.pool_verdict(no_toleration, tainted, TABLE).fits
    verdict = s.pool_verdict(no_toleration, next(p for p in pools if p.name == "gpu"), TABLE)
    assert verdict.fits


def test_every_workload_lands_in_the_expected_pool(pools: list[s.Pool], workloads: list[s.Workload]) -> None:
    placements = s.explain([*workloads, amd64_only(workloads)], pools, TABLE)
    assert {p.workload.name: p.pool for p in placements} == {**EXPECTED_POOL, "amd64-agent": "x86"}
    for placement in placements:
        chosen = next(v for v in placement.verdicts if v.pool == placement.pool)
        assert chosen.fits and chosen.cheapest, placement.workload.name
        prices = [price for _name, price in chosen.cheapest]
        assert prices == sorted(prices)
        for verdict in placement.verdicts:
            if verdict.pool != placement.pool and not verdict.fits:
                assert verdict.reason


def test_reasons_name_the_taint_the_architecture_and_the_resources(
    pools: list[s.Pool], workloads: list[s.Workload]
) -> None:
    placed = {p.workload.name: p for p in s.explain([*workloads, amd64_only(workloads)], pools, TABLE)}
    reasoning = {v.pool: v.reason for v in placed["vllm-reasoning"].verdicts}
    assert "taint aws.amazon.com/neuron:NoSchedule not tolerated" in reasoning["inf2"]
    assert "architecture" in reasoning["graviton"]
    litellm = {v.pool: v.reason for v in placed["litellm"].verdicts}
    assert "taint nvidia.com/gpu:NoSchedule not tolerated" in litellm["gpu"]
    assert "taint llm-eks-workshop/pool=x86:NoSchedule not tolerated" in litellm["x86"]
    agent = {v.pool: v.reason for v in placed["amd64-agent"].verdicts}
    assert "architecture" in agent["graviton"]
    greedy = replace(named(workloads)["vllm-reasoning"], name="eight-gpus", gpus=8)
    verdict = s.pool_verdict(greedy, next(p for p in pools if p.name == "gpu"), TABLE)
    assert not verdict.fits and verdict.reason.startswith("resources:") and "8 GPU > 4" in verdict.reason


def test_a_gpu_pod_without_toleration_stays_pending(pools: list[s.Pool], workloads: list[s.Workload]) -> None:
    careless = replace(named(workloads)["vllm-reasoning"], name="careless", tolerations=())
    placement = s.explain([careless], pools, TABLE)[0]
    assert placement.pool is None
    assert "nvidia.com/gpu" in {v.pool: v.reason for v in placement.verdicts}["gpu"]
    assert placement.row()["pool"].startswith("NONE")


def test_cheapest_gpu_instance_is_a_4_gpu_g6(pools: list[s.Pool], workloads: list[s.Workload]) -> None:
    reasoning = s.explain([named(workloads)["vllm-reasoning"]], pools, TABLE)[0]
    gpu = next(v for v in reasoning.verdicts if v.pool == "gpu")
    assert gpu.cheapest[0] == ("g6.12xlarge", TABLE["g6.12xlarge"].price_usd_per_hour)


def test_platform_cost_equals_the_sum_of_its_parts_and_cites_prices(
    pools: list[s.Pool], workloads: list[s.Workload]
) -> None:
    report = s.platform_cost(workloads, pools, TABLE)
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


def test_cost_at_max_replicas_is_not_lower(pools: list[s.Pool], workloads: list[s.Workload]) -> None:
    assert s.platform_cost(workloads, pools, TABLE, at="max").total >= s.platform_cost(workloads, pools, TABLE).total


def test_vcpus_by_quota_class(pools: list[s.Pool], workloads: list[s.Workload]) -> None:
    needed = s.platform_cost(workloads, pools, TABLE).vcpus_by_quota()
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


def test_the_workloads_are_read_from_the_manifests_given(pools: list[s.Pool]) -> None:
    """The explainer and the cost read the workloads from the manifests they are given (nothing planned in code);
    only the Helm releases' pods, which are no manifest of the workshop, come from helm-workloads.yaml."""
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
    assert "ray-serve-head" not in names and "litellm" not in names, "no workload of a manifest not given"
    assert {w.name for w in s.planned_workloads()} <= names, "the Helm releases' pods are always there"
    assert {w.name for w in s.planned_workloads()} == {n for n in EXPECTED_POOL if n.startswith("langfuse-")}
    qwen = next(w for w in workloads if w.name == "vllm-qwen3")
    assert (qwen.cpu_cores, qwen.memory_gib, qwen.gpus, qwen.image_architectures) == (12, 48, 4, ("amd64",))
    assert {p.workload.name: p.pool for p in s.explain(workloads, pools, TABLE)}["vllm-qwen3"] == "gpu"
    report = s.platform_cost(workloads, pools, TABLE)
    assert report.total == sum(p.hourly for p in report.parts)
    assert len([p for p in report.parts if p.pool == "gpu" and "root" not in p.item]) == 1


def test_every_workload_of_the_rendered_workshop_finds_a_pool(target: Target) -> None:
    """Through the target (the rendered manifests of every chapter, its flavour's pools), nothing stays Pending."""
    workloads = s.platform_workloads(target.render_all())
    assert {w.name for w in workloads} == set(EXPECTED_POOL)
    report = s.platform_cost(workloads, s.node_pools(target))
    assert report.total > 0 and report.unplaced == ()


def test_the_default_platform_leaves_out_what_is_deployed_only_on_request(target: Target) -> None:
    """The headline cost is what a learner deploys by default: no vision server (DEPLOY_VISION), no Ray Serve LLM,
    no Milvus; every on-demand workload belongs to a named optional part, so none is priced silently or dropped."""
    every = s.platform_workloads(target.render_all(include_on_demand=True))
    default = {w.name for w in s.default_workloads(every)}
    assert "vllm-reasoning" in default and "vllm-vision" not in default
    assert not {n for n in default if n.startswith(("ray-llm-", "milvus"))}
    assert default == set(EXPECTED_POOL) - {"vllm-vision"}
    for w in every:
        if w.on_demand:
            assert s.optional_part(w) is not None, f"{w.name} is on demand but no optional part names it"
    sources = {w.source for w in every}
    for part in s.OPTIONAL_PARTS:
        assert set(part.objects) <= sources, f"{part.name}: no rendered object {part.objects}"
        assert set(part.replaces) <= default | sources
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    assert "DEPLOY_VISION" in (notebooks / "02-vllm.ipynb").read_text(), "the vision server's switch exists"
    assert "APPLY_MILVUS" in (notebooks / "06-vector-index.ipynb").read_text(), "Milvus's switch exists"


def test_each_optional_part_is_priced_against_the_default_platform(target: Target, pools: list[s.Pool]) -> None:
    every = s.platform_workloads(target.render_all(include_on_demand=True))
    base = s.platform_cost(s.default_workloads(every), pools, TABLE)
    rows = {r["optional part"].split("(")[-1].rstrip(")"): r for r in s.optional_costs(every, pools, TABLE)}
    assert set(rows) == {"vllm-vision", "ray-llm-reasoning", "milvus"}
    vision = s.platform_cost(s.with_part(every, s.OPTIONAL_PARTS[0]), pools, TABLE)
    assert Decimal(rows["vllm-vision"]["platform $/h with it"]) == s.money(vision.total)
    second = [p for p in vision.parts if p.item.startswith("gpu node 2")]
    assert second and vision.total - base.total == sum(p.hourly for p in second), "it adds a second GPU node"
    assert rows["vllm-vision"]["nodes it changes"].startswith("+1 g")
    ray_llm = s.with_part(every, next(p for p in s.OPTIONAL_PARTS if p.replaces))
    assert "vllm-reasoning" not in {w.name for w in ray_llm}, "Ray Serve LLM replaces vLLM's Deployment"
    assert {w.name for w in ray_llm} >= {"ray-llm-reasoning-head", "ray-llm-reasoning-worker-gpu"}
    assert rows["ray-llm-reasoning"]["instead of"] == "vllm-reasoning"
    assert Decimal(rows["milvus"]["difference $/h"]) >= 0


def test_with_additive_parts_adds_what_adds_and_leaves_out_what_replaces() -> None:
    every = s.platform_workloads(Target("eks").render_all(include_on_demand=True))
    everything = s.with_additive_parts(every)
    default = s.default_workloads(every)
    assert set(w.source for w in default) <= set(w.source for w in everything)
    added = [w for w in everything if w not in default]
    assert added and all(s.optional_part(w) is not None for w in added)
    assert not any(s.optional_part(w).replaces for w in added)  # the Ray Serve alternative stays out
