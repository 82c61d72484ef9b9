"""Which node pool hosts which workload, why the others cannot, and what the platform costs per hour.

Works without a cluster. Node pool facts (requirements, taints, labels, limits, root volumes) are read
from the rendered chapter-01 manifests, the single source of truth; instance shapes and prices from the
committed price table (helpers.aws.load_instance_types). The scheduler is modelled the way Kubernetes
and Karpenter decide: taints must be tolerated, node selectors and the image architecture must match a
node the pool can launch, and the pod's requests must fit what is allocatable on that instance type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from helpers.aws import InstanceType, load_instance_types
from helpers.config import Settings
from helpers.manifests import Manifest, default_flavour, pod_specs, render, render_chapter, tolerates

NODEPOOL_CHAPTER = "01-nodepools"
HOURS_PER_MONTH = Decimal(730)  # AWS's convention for monthly estimates
PRICE_PLACES = 5  # every unit price is kept to 5 decimals, so shown parts add up to the shown total

# Other prices the platform's hourly cost includes (us-west-2, USD; AWS public price pages, 2026):
EKS_CLUSTER_PER_HOUR = Decimal("0.10")  # Amazon EKS cluster in standard support
GP3_PER_GB_MONTH = Decimal("0.08")  # Amazon EBS gp3 storage
GP3_PER_IOPS_MONTH = Decimal("0.005")  # gp3 provisioned IOPS above the free 3,000
GP3_PER_MIBS_MONTH = Decimal("0.04")  # gp3 provisioned throughput (MiB/s) above the free 125
COST_EXCLUDES = (
    "EKS Auto Mode management fee (per instance)",
    "persistent volumes (PVCs) of later chapters",
    "load balancers",
    "NAT gateway and data transfer",
    "managed services (OpenSearch, S3)",
)

# What a node keeps for itself, as Karpenter computes it for AL2023 / Auto Mode nodes.
MAX_PODS = 110
VM_MEMORY_OVERHEAD = 0.075  # share of memory the hypervisor and kernel take (Karpenter's default)
EVICTION_RESERVED_MIB = 100  # kubelet hard eviction threshold
DAEMONSET_CPU_M = 200  # estimate: kube-proxy, VPC CNI, EBS CSI node, Pod Identity agent, device plugin
DAEMONSET_MEMORY_MIB = 512

# How requirement keys map onto columns of the price table.
INSTANCE_PREFIXES = ("eks.amazonaws.com/", "karpenter.k8s.aws/")


@dataclass(frozen=True)
class Requirement:
    """One NodePool requirement: key, operator, values (Karpenter semantics)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    @property
    def attribute(self) -> str:
        """The key without the flavour prefix (instance-family, kubernetes.io/arch, ...)."""
        for prefix in INSTANCE_PREFIXES:
            if self.key.startswith(prefix):
                return self.key[len(prefix) :]
        return self.key

    def allows(self, instance: InstanceType) -> bool | None:
        """Whether an instance type satisfies the requirement (None when the table cannot tell)."""
        value = instance_attribute(instance, self.attribute)
        if value is _UNKNOWN:
            return None
        op = self.operator
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        if op == "In":
            return value is not None and str(value) in self.values
        if op == "NotIn":
            return value is None or str(value) not in self.values
        if value is None:
            return False
        bound = int(self.values[0])
        return {"Gt": value > bound, "Lt": value < bound, "Gte": value >= bound, "Lte": value <= bound}[op]

    def __str__(self) -> str:
        return f"{self.key} {self.operator} {','.join(self.values)}".strip()


_UNKNOWN = object()


def instance_attribute(instance: InstanceType, attribute: str) -> Any:
    """The value an instance type's node label would have (None: label absent; _UNKNOWN: not in the table)."""
    gpu = instance.gpu_count > 0
    neuron = instance.neuron_devices > 0
    table: dict[str, Any] = {
        "instance-family": instance.family,
        "instance-category": instance.category,
        "instance-generation": instance.generation,
        "instance-size": instance.size,
        "instance-cpu": instance.vcpu,
        "instance-memory": int(instance.memory_gib * 1024),
        "instance-gpu-count": instance.gpu_count if gpu else None,
        "instance-gpu-manufacturer": instance.gpu_manufacturer if gpu else None,
        "instance-gpu-name": instance.gpu_name if gpu else None,
        "instance-gpu-memory": int(instance.gpu_memory_gib * 1024) if gpu else None,
        "instance-accelerator-count": instance.neuron_devices if neuron else None,
        "instance-accelerator-name": "inferentia" if neuron else None,
        "instance-accelerator-manufacturer": "aws" if neuron else None,
        "kubernetes.io/arch": instance.arch,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance.instance_type,
        "karpenter.sh/capacity-type": "on-demand",  # the table prices on-demand capacity only
    }
    return table.get(attribute, _UNKNOWN)


@dataclass(frozen=True)
class RootVolume:
    """A node's root EBS volume, as the pool's node class sets it."""

    size_gib: int
    iops: int = 3000
    throughput: int = 125

    @property
    def hourly(self) -> Decimal:
        """What the volume costs per hour (gp3 storage + IOPS and throughput above the free baseline)."""
        monthly = (
            GP3_PER_GB_MONTH * self.size_gib
            + GP3_PER_IOPS_MONTH * max(0, self.iops - 3000)
            + GP3_PER_MIBS_MONTH * max(0, self.throughput - 125)
        )
        return money(monthly / HOURS_PER_MONTH)


@dataclass(frozen=True)
class Pool:
    """A node pool as the rendered NodePool (and its node class) define it."""

    name: str
    weight: int
    requirements: tuple[Requirement, ...]
    taints: tuple[dict[str, str], ...]
    labels: dict[str, str]
    limits: dict[str, str]
    root_volume: RootVolume | None

    @property
    def architectures(self) -> set[str]:
        """The CPU architectures this pool may launch."""
        archs = {"amd64", "arm64"}
        for req in self.requirements:
            if req.attribute == "kubernetes.io/arch":
                if req.operator == "In":
                    archs &= set(req.values)
                elif req.operator == "NotIn":
                    archs -= set(req.values)
        return archs

    def node_labels(self) -> dict[str, str]:
        """Labels every node of the pool carries whatever the instance type."""
        labels = {"karpenter.sh/nodepool": self.name, **self.labels}
        for req in self.requirements:
            if req.operator == "In" and len(req.values) == 1:
                labels[req.key] = req.values[0]
        return labels

    def instance_types(self, table: dict[str, InstanceType]) -> list[InstanceType]:
        """Instance types of the price table the pool may launch, cheapest first."""
        return sorted(
            (t for t in table.values() if all(r.allows(t) is not False for r in self.requirements)),
            key=lambda t: (t.price_usd_per_hour, t.instance_type),
        )


def quantity_cpu(value: Any) -> float:
    """A Kubernetes CPU quantity ('500m', '2', 1.5) in cores."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def quantity_gib(value: Any) -> float:
    """A Kubernetes memory quantity ('64Gi', '512Mi', '1G') in GiB."""
    match = re.match(r"^([0-9.]+)([A-Za-z]*)$", str(value))
    if not match:
        raise ValueError(f"not a memory quantity: {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    return number * _MEMORY_UNITS.get(unit, 1) / 2**30


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

# The workloads of the finished platform, with the requests the later chapters plan to set.
WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="vllm-reasoning",
        chapter="02-vllm",
        replicas=1,
        cpu="16",
        memory="64Gi",
        gpus=4,
        node_selector={"karpenter.sh/nodepool": "gpu"},
        tolerations=(GPU_TOLERATION,),
        image_architectures=("amd64",),
        why="Qwen3-14B in bf16 (~28 GiB of weights) split over 4 GPUs with --tensor-parallel-size 4",
    ),
    Workload(
        name="vllm-vision",
        chapter="02-vllm",
        replicas=1,
        cpu="6",
        memory="32Gi",
        gpus=1,
        node_selector={"karpenter.sh/nodepool": "gpu"},
        tolerations=(GPU_TOLERATION,),
        image_architectures=("amd64",),
        why="Qwen2.5-VL-7B fits one 24 GiB GPU; the gpu pool only has 4-GPU nodes",
    ),
    Workload(
        name="ray-head",
        chapter="03-ray",
        replicas=1,
        cpu="2",
        memory="8Gi",
        node_selector={"kubernetes.io/arch": "arm64"},
        image_architectures=("arm64",),
        why="Ray head with num-cpus 0: schedules work, runs none (aarch64 Ray image)",
    ),
    Workload(
        name="ray-cpu-worker",
        chapter="03-ray",
        replicas=1,
        cpu="8",
        memory="16Gi",
        node_selector={"kubernetes.io/arch": "arm64"},
        image_architectures=("arm64",),
        max_replicas=4,
        why="llama.cpp embeddings on Graviton; Ray autoscales 1 to 4 workers",
    ),
    Workload(
        name="litellm",
        chapter="04-gateway",
        replicas=2,
        cpu="1",
        memory="2Gi",
        why="the gateway; two replicas so a restart drops no request; multi-arch image",
    ),
    Workload(
        name="langfuse-web",
        chapter="05-observability",
        replicas=1,
        cpu="1",
        memory="2Gi",
        why="Langfuse UI and ingestion API",
    ),
    Workload(
        name="langfuse-worker",
        chapter="05-observability",
        replicas=1,
        cpu="1",
        memory="2Gi",
        why="Langfuse background processing",
    ),
    Workload(
        name="langfuse-clickhouse",
        chapter="05-observability",
        replicas=1,
        cpu="2",
        memory="8Gi",
        why="trace storage (ClickHouse)",
    ),
    Workload(
        name="langfuse-postgresql",
        chapter="05-observability",
        replicas=1,
        cpu="500m",
        memory="1Gi",
        why="Langfuse metadata (PostgreSQL)",
    ),
    Workload(
        name="langfuse-redis",
        chapter="05-observability",
        replicas=1,
        cpu="250m",
        memory="512Mi",
        why="Langfuse queue and cache",
    ),
    Workload(
        name="agent",
        chapter="08-agent",
        replicas=1,
        cpu="1",
        memory="2Gi",
        node_selector={"kubernetes.io/arch": "amd64"},
        tolerations=(X86_TOLERATION,),
        image_architectures=("amd64",),
        why="image built by the workshop for linux/amd64 only, so it must run on x86 nodes",
    ),
    Workload(
        name="mcp-web-search",
        chapter="07-mcp",
        replicas=1,
        cpu="250m",
        memory="256Mi",
        node_selector={"kubernetes.io/arch": "amd64"},
        tolerations=(X86_TOLERATION,),
        image_architectures=("amd64",),
        why="MCP server built by the workshop for linux/amd64",
    ),
    Workload(
        name="mcp-filesystem",
        chapter="07-mcp",
        replicas=1,
        cpu="250m",
        memory="256Mi",
        node_selector={"kubernetes.io/arch": "amd64"},
        tolerations=(X86_TOLERATION,),
        image_architectures=("amd64",),
        why="MCP server built by the workshop for linux/amd64",
    ),
)


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
                )
            )
    return result


def platform_workloads(items: Iterable[Manifest] | None = None) -> list[Workload]:
    """The workshop's workloads: each chapter's rendered manifests where they exist, the planned WORKLOADS elsewhere."""
    items = list(items) if items is not None else render()
    from_manifests = workloads_from_manifests(items)
    covered = {w.chapter for w in from_manifests}
    return [w for w in WORKLOADS if w.chapter not in covered] + from_manifests


# ---------------------------------------------------------------- pools from manifests


def _root_volume(node_class: dict[str, Any] | None) -> RootVolume | None:
    if not node_class:
        return None
    spec = node_class.get("spec") or {}

    def gib(size: str) -> int:
        return int(round(quantity_gib(size)))

    if node_class.get("kind") == "NodeClass":
        storage = spec.get("ephemeralStorage") or {}
        return RootVolume(
            gib(storage.get("size", "80Gi")), int(storage.get("iops", 3000)), int(storage.get("throughput", 125))
        )
    for mapping in spec.get("blockDeviceMappings") or []:
        if mapping.get("rootVolume"):
            ebs = mapping.get("ebs") or {}
            return RootVolume(
                gib(ebs.get("volumeSize", "20Gi")), int(ebs.get("iops", 3000)), int(ebs.get("throughput", 125))
            )
    return None


def pools_from_manifests(items: Iterable[Manifest | dict[str, Any]]) -> list[Pool]:
    """Node pools read from rendered NodePool objects and the node classes they reference."""
    docs = [m.doc if isinstance(m, Manifest) else m for m in items]
    classes = {(d["kind"], d["metadata"]["name"]): d for d in docs if d.get("kind") in ("NodeClass", "EC2NodeClass")}
    pools = []
    for doc in docs:
        if doc.get("kind") != "NodePool":
            continue
        spec = doc["spec"]
        node = spec["template"]["spec"]
        ref = node["nodeClassRef"]
        pools.append(
            Pool(
                name=doc["metadata"]["name"],
                weight=int(spec.get("weight", 0)),
                requirements=tuple(
                    Requirement(r["key"], r["operator"], tuple(map(str, r.get("values") or ())))
                    for r in node.get("requirements", [])
                ),
                taints=tuple(dict(t) for t in node.get("taints") or ()),
                labels=dict(((spec["template"].get("metadata") or {}).get("labels")) or {}),
                limits={k: str(v) for k, v in (spec.get("limits") or {}).items()},
                root_volume=_root_volume(classes.get((ref["kind"], ref["name"]))),
            )
        )
    return sorted(pools, key=lambda p: (-p.weight, p.name))


def node_pools(
    flavour: str | None = None, overrides: dict[str, Any] | None = None, settings: Settings | None = None
) -> list[Pool]:
    """The workshop's node pools, rendered from manifests/01-nodepools for a flavour (no cluster needed)."""
    return pools_from_manifests(
        render_chapter(
            NODEPOOL_CHAPTER, flavour=flavour or default_flavour(settings), overrides=overrides, settings=settings
        )
    )


# ---------------------------------------------------------------- fitting pods onto instances


@dataclass(frozen=True)
class Allocatable:
    """What pods can use on one node of an instance type, after the node's own reservations."""

    cpu: float
    memory_gib: float
    gpus: int
    neuron_devices: int


def kube_reserved_cpu_m(vcpus: int) -> float:
    """CPU the kubelet reserves (EKS formula: 6% of core 1, 1% of core 2, 0.5% of cores 3-4, 0.25% above)."""
    cores = [60, 10, 5, 5] + [2.5] * max(0, vcpus - 4)
    return sum(cores[:vcpus])


def allocatable(instance: InstanceType) -> Allocatable:
    """Allocatable resources on a node of this type: capacity less VM overhead, kubelet reserve and daemonsets."""
    cpu_m = instance.vcpu * 1000 - kube_reserved_cpu_m(instance.vcpu) - DAEMONSET_CPU_M
    memory_mib = (
        instance.memory_gib * 1024 * (1 - VM_MEMORY_OVERHEAD)
        - (255 + 11 * MAX_PODS)
        - EVICTION_RESERVED_MIB
        - DAEMONSET_MEMORY_MIB
    )
    return Allocatable(
        cpu=cpu_m / 1000, memory_gib=memory_mib / 1024, gpus=instance.gpu_count, neuron_devices=instance.neuron_devices
    )


def _fits(w: Workload, room: Allocatable) -> bool:
    return (
        w.cpu_cores <= room.cpu + 1e-9
        and w.memory_gib <= room.memory_gib + 1e-9
        and w.gpus <= room.gpus
        and w.neuron_devices <= room.neuron_devices
    )


def _shortfall(w: Workload, instance: InstanceType) -> str:
    room = allocatable(instance)
    gaps = []
    if w.cpu_cores > room.cpu:
        gaps.append(f"{w.cpu_cores:g} CPU > {room.cpu:.2f}")
    if w.memory_gib > room.memory_gib:
        gaps.append(f"{w.memory_gib:g} GiB > {room.memory_gib:.1f}")
    if w.gpus > room.gpus:
        gaps.append(f"{w.gpus} GPU > {room.gpus}")
    if w.neuron_devices > room.neuron_devices:
        gaps.append(f"{w.neuron_devices} Neuron > {room.neuron_devices}")
    return ", ".join(gaps)


@dataclass(frozen=True)
class PoolVerdict:
    """Whether one pool can host one workload, why (not), and the cheapest instance types that would."""

    pool: str
    fits: bool
    reason: str
    cheapest: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where one workload goes: the chosen pool (or None) and every pool's verdict."""

    workload: Workload
    pool: str | None
    verdicts: tuple[PoolVerdict, ...]

    def row(self) -> dict[str, str]:
        """One table row: workload, requests, chosen pool, cheapest types, why the other pools cannot."""
        chosen = next((v for v in self.verdicts if v.pool == self.pool), None)
        return {
            "workload": self.workload.name,
            "requests (per pod)": self.workload.requests_text(),
            "pods": str(self.workload.replicas),
            "pool": self.pool or "NONE: stays Pending",
            "cheapest instance types": ", ".join(f"{t} ${p}/h" for t, p in (chosen.cheapest if chosen else ())),
            "why not the others": " | ".join(f"{v.pool}: {v.reason}" for v in self.verdicts if v.pool != self.pool),
        }


def pool_verdict(w: Workload, pool: Pool, table: dict[str, InstanceType], top: int = 3) -> PoolVerdict:
    """Can this pool host this workload? Checks taints, node selectors, architecture, instance types, resources."""
    reasons = []
    for taint in pool.taints:
        if not tolerates(w.tolerations, taint):
            shown = f"{taint['key']}={taint['value']}" if taint.get("value") else taint["key"]
            reasons.append(f"taint {shown}:{taint['effect']} not tolerated")
    labels = pool.node_labels()
    archs = pool.architectures & set(w.image_architectures)
    for key, value in w.node_selector.items():
        if key == "kubernetes.io/arch":
            archs &= {value}
            if value not in pool.architectures:
                reasons.append(f"architecture: selects {value}, pool launches {'/'.join(sorted(pool.architectures))}")
        elif key in labels and labels[key] != value:
            reasons.append(f"node selector {key}={value}: this pool's nodes have {labels[key]}")
        elif key not in labels and not any(r.key == key for r in pool.requirements):
            reasons.append(f"node selector {key}={value}: no node of this pool carries that label")
    if not set(w.image_architectures) & pool.architectures and not any(r.startswith("architecture") for r in reasons):
        reasons.append(
            f"architecture: image built for {'/'.join(w.image_architectures)}, "
            f"pool launches {'/'.join(sorted(pool.architectures))}"
        )
    if reasons:
        return PoolVerdict(pool.name, False, "; ".join(dict.fromkeys(reasons)))
    candidates = [
        t
        for t in pool.instance_types(table)
        if t.arch in archs
        and all(
            instance_attribute(t, k) in (_UNKNOWN, v) or str(instance_attribute(t, k)) == v
            for k, v in w.node_selector.items()
            if k not in labels
        )
    ]
    if not candidates:
        return PoolVerdict(pool.name, False, "instance requirements: no instance type in the price table matches")
    fitting = [t for t in candidates if _fits(w, allocatable(t))]
    if not fitting:
        biggest = max(candidates, key=lambda t: (t.gpu_count, t.neuron_devices, t.vcpu, t.memory_gib))
        return PoolVerdict(
            pool.name,
            False,
            f"resources: no instance type fits {w.requests_text()} "
            f"(largest, {biggest.instance_type}: {_shortfall(w, biggest)})",
        )
    return PoolVerdict(pool.name, True, "fits", tuple((t.instance_type, t.price_usd_per_hour) for t in fitting[:top]))


def explain(
    workloads: Iterable[Workload] | None = None,
    pools: list[Pool] | None = None,
    table: dict[str, InstanceType] | None = None,
) -> list[Placement]:
    """For each workload (default: platform_workloads()): the pool that hosts it (highest weight, then cheapest)
    and every pool's verdict."""
    workloads = workloads if workloads is not None else platform_workloads()
    pools = pools if pools is not None else node_pools()
    table = table if table is not None else load_instance_types()
    placements = []
    for w in workloads:
        verdicts = tuple(pool_verdict(w, p, table) for p in pools)
        weights = {p.name: p.weight for p in pools}
        fitting = [v for v in verdicts if v.fits]
        chosen = min(fitting, key=lambda v: (-weights[v.pool], v.cheapest[0][1])) if fitting else None
        placements.append(Placement(w, chosen.pool if chosen else None, verdicts))
    return placements


def placement_rows(placements: Iterable[Placement]) -> list[dict[str, str]]:
    """Placements as table rows for a notebook."""
    return [p.row() for p in placements]


# ---------------------------------------------------------------- cost


@dataclass(frozen=True)
class CostPart:
    """One line of the hourly cost: what, how many, the unit price and where that price comes from."""

    item: str
    pool: str
    instance_type: str
    count: int
    unit_price: Decimal
    hosts: tuple[str, ...]
    source: str

    @property
    def hourly(self) -> Decimal:
        """count x unit price, USD per hour."""
        return self.unit_price * self.count


@dataclass(frozen=True)
class CostReport:
    """The platform's hourly cost as a list of parts; the total is their sum."""

    parts: tuple[CostPart, ...]
    unplaced: tuple[str, ...]
    excludes: tuple[str, ...] = COST_EXCLUDES

    @property
    def total(self) -> Decimal:
        """USD per hour: the sum of every part."""
        return sum((p.hourly for p in self.parts), Decimal(0))

    @property
    def monthly(self) -> Decimal:
        """USD per month at 730 hours."""
        return self.total * HOURS_PER_MONTH

    def vcpus_by_quota(self) -> dict[str, int]:
        """vCPUs the plan's nodes need per on-demand quota class (standard, gpu, inferentia)."""
        from helpers.aws import QUOTAS, quota_for_category

        table = load_instance_types()
        needed = {name: 0 for name in QUOTAS}
        for part in self.parts:
            instance = table.get(part.instance_type)
            spec = quota_for_category(instance.category) if instance else None
            if spec:
                name = next(n for n, s in QUOTAS.items() if s == spec)
                needed[name] += instance.vcpu * part.count
        return needed

    def rows(self) -> list[dict[str, str]]:
        """The parts (and the total) as table rows: each cites instance type, unit price and source."""
        rows = [
            {
                "item": p.item,
                "pool": p.pool,
                "instance type": p.instance_type,
                "count": str(p.count),
                "unit price $/h": f"{money(p.unit_price)}",
                "$/h": f"{money(p.hourly)}",
                "hosts": ", ".join(p.hosts),
                "price source": p.source,
            }
            for p in self.parts
        ]
        rows.append(
            {
                "item": "TOTAL",
                "pool": "",
                "instance type": "",
                "count": "",
                "unit price $/h": "",
                "$/h": f"{money(self.total)}",
                "hosts": f"about ${money(self.monthly, 0)} per month (730 h)",
                "price source": "sum of the lines above",
            }
        )
        return rows


def money(value: Decimal, places: int = PRICE_PLACES) -> Decimal:
    """A dollar amount rounded for display (the sums themselves stay exact)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _pack(pods: list[Workload], instance: InstanceType) -> list[list[Workload]] | None:
    """First-fit-decreasing packing of pods onto nodes of one type; None if some pod fits no node of it."""
    room = allocatable(instance)
    if not all(_fits(p, room) for p in pods):
        return None
    nodes: list[tuple[Allocatable, list[Workload]]] = []
    order = sorted(pods, key=lambda p: (p.gpus, p.neuron_devices, p.cpu_cores, p.memory_gib), reverse=True)
    for pod in order:
        for i, (free, placed) in enumerate(nodes):
            if _fits(pod, free):
                nodes[i] = (
                    Allocatable(
                        free.cpu - pod.cpu_cores,
                        free.memory_gib - pod.memory_gib,
                        free.gpus - pod.gpus,
                        free.neuron_devices - pod.neuron_devices,
                    ),
                    placed + [pod],
                )
                break
        else:
            nodes.append(
                (
                    Allocatable(
                        room.cpu - pod.cpu_cores,
                        room.memory_gib - pod.memory_gib,
                        room.gpus - pod.gpus,
                        room.neuron_devices - pod.neuron_devices,
                    ),
                    [pod],
                )
            )
    return [placed for _free, placed in nodes]


def platform_cost(
    workloads: Iterable[Workload] | None = None,
    pools: list[Pool] | None = None,
    table: dict[str, InstanceType] | None = None,
    at: str = "baseline",
) -> CostReport:
    """Hourly cost of running the workloads: per pool, the cheapest single instance type that packs its pods,
    plus each node's root volume and the EKS cluster itself. `at="max"` uses every workload's max replicas."""
    pools = pools if pools is not None else node_pools()
    table = table if table is not None else load_instance_types()
    workloads = list(workloads) if workloads is not None else platform_workloads()
    placements = explain(workloads, pools, table)
    by_pool: dict[str, list[Workload]] = {}
    unplaced = []
    for placement in placements:
        w = placement.workload
        count = (w.max_replicas or w.replicas) if at == "max" else w.replicas
        if placement.pool is None:
            unplaced.append(w.name)
            continue
        by_pool.setdefault(placement.pool, []).extend([w] * count)
    parts = [
        CostPart(
            "EKS cluster (control plane)",
            "-",
            "-",
            1,
            EKS_CLUSTER_PER_HOUR,
            (),
            "Amazon EKS pricing: $0.10 per cluster hour, standard support",
        )
    ]
    for pool in pools:
        pods = by_pool.get(pool.name)
        if not pods:
            continue
        options = []
        for instance in pool.instance_types(table):
            packed = _pack(pods, instance)
            if packed is not None:
                options.append(
                    (instance.price_usd_per_hour * len(packed), len(packed), instance.instance_type, instance, packed)
                )
        if not options:
            unplaced += sorted({p.name for p in pods})
            continue
        _cost, _n, _name, instance, packed = min(options, key=lambda o: o[:3])
        for i, node in enumerate(packed, start=1):
            hosted = tuple(
                f"{name} x{node.count(w)}" if node.count(w) > 1 else name
                for name, w in {w.name: w for w in node}.items()
            )
            parts.append(
                CostPart(
                    f"{pool.name} node {i}",
                    pool.name,
                    instance.instance_type,
                    1,
                    instance.price_usd_per_hour,
                    hosted,
                    f"on-demand, {instance.price_source}",
                )
            )
            if pool.root_volume:
                v = pool.root_volume
                parts.append(
                    CostPart(
                        f"{pool.name} node {i} root volume",
                        pool.name,
                        f"gp3 {v.size_gib} GiB/{v.iops} IOPS/{v.throughput} MiB/s",
                        1,
                        v.hourly,
                        (),
                        "Amazon EBS gp3: $0.08/GB-month, $0.005/IOPS-month >3000, $0.04/MiB/s-month >125; 730 h/month",
                    )
                )
    return CostReport(tuple(parts), tuple(unplaced))


# ---------------------------------------------------------------- limits as a spend cap


@dataclass(frozen=True)
class SpendCap:
    """The most a pool can cost per hour when its limits are filled with its priciest allowed instance type."""

    pool: str
    limits: dict[str, str]
    worst_instance_type: str
    max_nodes: int
    max_hourly: Decimal


_LIMIT_RESOURCES = {
    "cpu": lambda t: t.vcpu,
    "memory": lambda t: t.memory_gib,
    "nvidia.com/gpu": lambda t: t.gpu_count,
    "aws.amazon.com/neuron": lambda t: t.neuron_devices,
}


def spend_caps(pools: list[Pool] | None = None, table: dict[str, InstanceType] | None = None) -> list[SpendCap]:
    """For each pool: the largest hourly bill its limits allow (nodes of one type, none past a limit)."""
    pools = pools if pools is not None else node_pools()
    table = table if table is not None else load_instance_types()
    caps = []
    for pool in pools:
        worst: tuple[Decimal, int, str] = (Decimal(0), 0, "-")
        for t in pool.instance_types(table):
            counts = []
            for resource, amount in pool.limits.items():
                per_node = _LIMIT_RESOURCES.get(resource, lambda _t: 0)(t)
                if per_node:
                    limit = quantity_gib(amount) if resource == "memory" else quantity_cpu(amount)
                    counts.append(math.floor(limit / per_node + 1e-9))
            n = min(counts) if counts else 0
            if (t.price_usd_per_hour * n, -n) > (worst[0], -worst[1]):
                worst = (t.price_usd_per_hour * n, n, t.instance_type)
        caps.append(SpendCap(pool.name, pool.limits, worst[2], worst[1], worst[0]))
    return caps
