"""The workshop's workloads as the scheduler sees them: requests per pod, placement rules, image architectures.

Read from every chapter's rendered manifests; the pods of Helm releases the workshop installs (which are not
its manifests) come from `manifests/<chapter>/helm-workloads.yaml`.

Not everything rendered is deployed by default: OPTIONAL_PARTS names the parts a learner deploys only on request
(the vision server behind chapter 02's DEPLOY_VISION, chapter 03's vLLM inside Ray Serve, chapter 06's Milvus), so
the default platform's cost leaves them out and each is priced on its own (cost.optional_costs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from helpers.infra.manifests import MANIFESTS_DIR, ON_DEMAND_DIR, Manifest, pod_specs
from helpers.infra.scheduling.pools import quantity_cpu, quantity_gib


@dataclass(frozen=True)
class Workload:
    """A workload of the workshop as the scheduler sees it: requests per pod, placement rules, image architectures."""

    name: str
    chapter: str
    replicas: int
    cpu: str
    memory: str
    gpus: int = 0
    neuron_devices: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str], ...] = ()
    image_architectures: tuple[str, ...] = ("amd64", "arm64")
    max_replicas: int | None = None
    why: str = ""
    source: str = ""  # the name of the object it comes from (a Deployment, StatefulSet or RayService)
    on_demand: bool = False  # rendered from a chapter's on-demand/ templates: applied only when a notebook asks

    @property
    def cpu_cores(self) -> float:
        """CPU request per pod, in cores."""
        return quantity_cpu(self.cpu)

    @property
    def memory_gib(self) -> float:
        """Memory request per pod, in GiB."""
        return quantity_gib(self.memory)

    def requests_text(self) -> str:
        """The pod's requests in one short string."""
        parts = [f"{self.cpu} CPU", self.memory]
        if self.gpus:
            parts.append(f"{self.gpus} GPU")
        if self.neuron_devices:
            parts.append(f"{self.neuron_devices} Neuron")
        return " / ".join(parts)


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
X86_TOLERATION = {"key": "llm-eks-workshop/pool", "operator": "Equal", "value": "x86", "effect": "NoSchedule"}


def planned_workloads() -> list[Workload]:
    """The pods of the Helm releases the workshop installs (not its manifests): manifests/*/helm-workloads.yaml."""
    found = []
    for path in sorted(MANIFESTS_DIR.glob("*/helm-workloads.yaml")):
        for row in yaml.safe_load(path.read_text()) or []:
            found.append(Workload(chapter=path.parent.name, **{k: tuple(v) if isinstance(v, list) else v
                                                                for k, v in row.items()}))
    return found


def _pod_requests(spec: dict[str, Any]) -> dict[str, float]:
    total = {"cpu": 0.0, "memory": 0.0, "nvidia.com/gpu": 0.0, "aws.amazon.com/neuron": 0.0}
    for container in spec.get("containers") or []:
        requests = {
            **((container.get("resources") or {}).get("limits") or {}),
            **((container.get("resources") or {}).get("requests") or {}),
        }
        total["cpu"] += quantity_cpu(requests.get("cpu", 0))
        total["memory"] += quantity_gib(requests.get("memory", 0))
        total["nvidia.com/gpu"] += float(requests.get("nvidia.com/gpu", 0))
        total["aws.amazon.com/neuron"] += float(requests.get("aws.amazon.com/neuron", 0))
    return total


def workloads_from_manifests(items: Iterable[Manifest | dict[str, Any]]) -> list[Workload]:
    """Workloads read from rendered Deployments, StatefulSets and Ray objects (requests, selectors, tolerations)."""
    result = []
    for item in items:
        doc = item.doc if isinstance(item, Manifest) else item
        chapter = item.chapter if isinstance(item, Manifest) else ""
        kind = doc.get("kind")
        if kind not in ("Deployment", "StatefulSet", "RayService", "RayCluster"):
            continue
        name = doc["metadata"]["name"]
        on_demand = isinstance(item, Manifest) and item.template.startswith(ON_DEMAND_DIR + "/")
        cluster = (doc["spec"].get("rayClusterConfig") if kind == "RayService" else doc["spec"]) or {}
        groups = {f"worker {g.get('groupName', '?')}": g for g in cluster.get("workerGroupSpecs") or []}
        for where, spec in pod_specs(doc):
            if where in groups:
                group = groups[where]
                replicas = int(group.get("minReplicas", group.get("replicas", 1)))
                maximum: int | None = int(group.get("maxReplicas", replicas))
                label = f"{name}-{where.replace(' ', '-')}"
            else:
                replicas = 1 if where == "head" else int(doc["spec"].get("replicas", 1))
                maximum, label = None, f"{name}-head" if where == "head" else name
            requests = _pod_requests(spec)
            selector = dict(spec.get("nodeSelector") or {})
            arch = selector.get("kubernetes.io/arch")
            result.append(
                Workload(
                    name=label,
                    chapter=chapter,
                    replicas=replicas,
                    cpu=f"{requests['cpu']:g}",
                    memory=f"{requests['memory']:g}Gi",
                    gpus=int(requests["nvidia.com/gpu"]),
                    neuron_devices=int(requests["aws.amazon.com/neuron"]),
                    node_selector=selector,
                    tolerations=tuple(spec.get("tolerations") or ()),
                    image_architectures=(arch,) if arch else ("amd64", "arm64"),
                    max_replicas=maximum,
                    why=f"from {kind}/{name} in manifests/{chapter}" if chapter else f"from {kind}/{name}",
                    source=name,
                    on_demand=on_demand,
                )
            )
    return result


def platform_workloads(items: Iterable[Manifest | dict[str, Any]]) -> list[Workload]:
    """The workshop's workloads: those of the rendered manifests (t.render_all()), then the Helm releases' pods."""
    return workloads_from_manifests(items) + planned_workloads()


@dataclass(frozen=True)
class OptionalPart:
    """A part of the platform a learner deploys only on request: in addition to the default, or instead of part of it."""

    name: str
    chapter: str
    objects: tuple[str, ...]  # the rendered objects it runs (Deployment, StatefulSet, RayService names)
    switch: str  # how a learner deploys it
    replaces: tuple[str, ...] = ()  # default objects it stands in for (deploy one or the other, never both)


OPTIONAL_PARTS: tuple[OptionalPart, ...] = (
    OptionalPart("vision server (vllm-vision)", "02-vllm", ("vllm-vision",),
                 "DEPLOY_VISION = True in notebook 02"),
    OptionalPart("vLLM inside Ray Serve (ray-llm-reasoning)", "03-ray-serve", ("ray-llm-reasoning",),
                 "apply ray_llm.render(t) in notebook 03", replaces=("vllm-reasoning",)),
    OptionalPart("Milvus standalone in the cluster (milvus)", "06-vector-index", ("milvus",),
                 "APPLY_MILVUS = True in notebook 06"),
)


def optional_part(workload: Workload) -> OptionalPart | None:
    """The optional part a workload belongs to (None: it is deployed by default)."""
    return next((p for p in OPTIONAL_PARTS if workload.source in p.objects), None)


def is_default(workload: Workload) -> bool:
    """Whether a learner deploys this workload by default: not on demand, not part of an optional part."""
    return not workload.on_demand and optional_part(workload) is None


def default_workloads(workloads: Iterable[Workload]) -> list[Workload]:
    """What a learner deploys by default: every workload but the optional parts' and the on-demand ones."""
    return [w for w in workloads if is_default(w)]


def with_part(workloads: Iterable[Workload], part: OptionalPart) -> list[Workload]:
    """The default platform with one optional part deployed (and without the default objects it replaces)."""
    workloads = list(workloads)
    return ([w for w in default_workloads(workloads) if w.source not in part.replaces]
            + [w for w in workloads if w.source in part.objects])


def with_additive_parts(workloads: Iterable[Workload]) -> list[Workload]:
    """The default platform with every optional part that adds to it (not those that replace a default object)."""
    workloads = list(workloads)
    return default_workloads(workloads) + [w for w in workloads
                                           if (part := optional_part(w)) is not None and not part.replaces]
