"""What the platform costs per hour: pods packed onto the cheapest instances that fit, the cluster fee, root
volumes, and the spend cap the node pools' limits put on it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from helpers.infra.aws import InstanceType, load_instance_types
from helpers.infra.scheduling.fit import Allocatable, _fits, allocatable, explain
from helpers.infra.scheduling.pools import HOURS_PER_MONTH, Pool, money, quantity_cpu, quantity_gib
from helpers.infra.scheduling.workloads import OPTIONAL_PARTS, Workload, default_workloads, with_part


# Other prices the platform's hourly cost includes (us-west-2, USD; AWS public price pages, 2026):
EKS_CLUSTER_PER_HOUR = Decimal("0.10")  # Amazon EKS cluster in standard support
COST_EXCLUDES = (
    "EKS Auto Mode management fee (per instance)",
    "persistent volumes (PVCs) of later chapters",
    "load balancers",
    "NAT gateway and data transfer",
    "managed services (OpenSearch, S3)",
)


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
        from helpers.infra.aws import QUOTAS, quota_for_category

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
    workloads: Iterable[Workload],
    pools: list[Pool],
    table: dict[str, InstanceType] | None = None,
    at: str = "baseline",
) -> CostReport:
    """Hourly cost of running the workloads: per pool, the cheapest single instance type that packs its pods,
    plus each node's root volume and the EKS cluster itself. `at="max"` uses every workload's max replicas."""
    table = table if table is not None else load_instance_types()
    workloads = list(workloads)
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


def spend_caps(pools: list[Pool], table: dict[str, InstanceType] | None = None) -> list[SpendCap]:
    """For each pool: the largest hourly bill its limits allow (nodes of one type, none past a limit)."""
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


def _nodes(report: CostReport) -> dict[tuple[str, str], int]:
    """(pool, instance type) -> how many nodes of it a cost report runs."""
    counts: dict[tuple[str, str], int] = {}
    for part in report.parts:
        if part.pool != "-" and "root volume" not in part.item:
            counts[(part.pool, part.instance_type)] = counts.get((part.pool, part.instance_type), 0) + part.count
    return counts


def node_changes(before: CostReport, after: CostReport) -> str:
    """The nodes `after` runs that `before` does not, and those it no longer runs: '+1 g6.12xlarge (gpu)'."""
    old, new = _nodes(before), _nodes(after)
    changes = [f"{'+' if new.get(k, 0) > old.get(k, 0) else '-'}{abs(new.get(k, 0) - old.get(k, 0))} {k[1]} ({k[0]})"
               for k in sorted(set(old) | set(new)) if new.get(k, 0) != old.get(k, 0)]
    return ", ".join(changes) or "none: its pods fit on the nodes already there"


def optional_costs(workloads: Iterable[Workload], pools: list[Pool], table: dict[str, InstanceType] | None = None
                   ) -> list[dict[str, str]]:
    """Each optional part priced on its own: the default platform's $/h, then with the part deployed (in addition,
    or instead of what it replaces), and the difference. `workloads` must include the optional parts' workloads
    (platform_workloads(t.render_all(include_on_demand=True)))."""
    workloads = list(workloads)
    base = platform_cost(default_workloads(workloads), pools, table)
    rows = []
    for part in OPTIONAL_PARTS:
        if not any(w.source in part.objects for w in workloads):
            continue
        report = platform_cost(with_part(workloads, part), pools, table)
        rows.append({
            "optional part": part.name,
            "chapter": part.chapter,
            "deployed with": part.switch,
            "instead of": ", ".join(part.replaces) or "(in addition)",
            "nodes it changes": node_changes(base, report),
            "platform $/h with it": f"{money(report.total)}",
            "difference $/h": f"{'+' if report.total > base.total else ''}{money(report.total - base.total)}",
        })
    return rows
