"""Node pools as Karpenter will create them, read from the rendered chapter-01 NodePools and node classes.

Also the small arithmetic every other part shares: Kubernetes quantities, money rounded to the cent-fraction
the price table uses, and what a node's root volume costs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from helpers.infra.aws import InstanceType
from helpers.infra.manifests import Manifest

if TYPE_CHECKING:
    from helpers.target import Target


NODEPOOL_CHAPTER = "01-cluster-and-nodepools"
HOURS_PER_MONTH = Decimal(730)  # AWS's convention for monthly estimates
PRICE_PLACES = 5  # every unit price is kept to 5 decimals, so shown parts add up to the shown total
GP3_PER_GB_MONTH = Decimal("0.08")  # Amazon EBS gp3 storage
GP3_PER_IOPS_MONTH = Decimal("0.005")  # gp3 provisioned IOPS above the free 3,000
GP3_PER_MIBS_MONTH = Decimal("0.04")  # gp3 provisioned throughput (MiB/s) above the free 125


def money(value: Decimal, places: int = PRICE_PLACES) -> Decimal:
    """A dollar amount rounded for display (the sums themselves stay exact)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


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
        if value is UNKNOWN:
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


UNKNOWN = object()


def instance_attribute(instance: InstanceType, attribute: str) -> Any:
    """The value an instance type's node label would have (None: label absent; UNKNOWN: not in the table).

    `attribute` is a label key with or without the flavour's prefix (instance-family or
    karpenter.k8s.aws/instance-family), so a pod's node selector can be read as written."""
    attribute = next((attribute[len(p):] for p in INSTANCE_PREFIXES if attribute.startswith(p)), attribute)
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
    return table.get(attribute, UNKNOWN)


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


def taint_text(taints: Iterable[dict[str, str]]) -> str:
    """Taints as `key=value:Effect`, comma-separated ("none" when there are none)."""
    return ", ".join(f"{t['key']}{'=' + t['value'] if t.get('value') else ''}:{t['effect']}" for t in taints) or "none"


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


def node_pools(t: Target, overrides: dict[str, Any] | None = None) -> list[Pool]:
    """The target's node pools, rendered from manifests/01-cluster-and-nodepools for its flavour (no cluster needed)."""
    return pools_from_manifests(t.render(NODEPOOL_CHAPTER, overrides=overrides))
