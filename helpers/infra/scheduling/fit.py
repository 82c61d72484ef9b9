"""Which node pool hosts a workload and why the others cannot: taints, selectors, architectures, allocatable room.

Modelled the way Kubernetes and Karpenter decide: taints must be tolerated, node selectors and the image
architecture must match a node the pool can launch, and the requests must fit what is allocatable."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from helpers.infra.aws import InstanceType, load_instance_types
from helpers.infra.manifests import tolerates
from helpers.infra.scheduling.pools import UNKNOWN, Pool, instance_attribute
from helpers.infra.scheduling.workloads import Workload


# What a node keeps for itself, as Karpenter computes it for AL2023 / Auto Mode nodes.
MAX_PODS = 110
VM_MEMORY_OVERHEAD = 0.075  # share of memory the hypervisor and kernel take (Karpenter's default)
EVICTION_RESERVED_MIB = 100  # kubelet hard eviction threshold
DAEMONSET_CPU_M = 200  # estimate: kube-proxy, VPC CNI, EBS CSI node, Pod Identity agent, device plugin
DAEMONSET_MEMORY_MIB = 512


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

    def verdicts_row(self) -> dict[str, str]:
        """One table row: the workload, then per pool ✔ (chosen), "fits too" (a lower-weight pool) or why not."""
        verdicts = {v.pool: "✔" if v.pool == self.pool else "fits too" if v.fits else v.reason for v in self.verdicts}
        return {"workload": self.workload.name, **verdicts}


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
            instance_attribute(t, k) in (UNKNOWN, v) or str(instance_attribute(t, k)) == v
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
    workloads: Iterable[Workload],
    pools: list[Pool],
    table: dict[str, InstanceType] | None = None,
) -> list[Placement]:
    """For each workload: the pool that hosts it (highest weight, then cheapest) and every pool's verdict
    (`table`: the committed price table unless given)."""
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
