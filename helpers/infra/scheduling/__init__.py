"""Which node pool hosts which workload, why the others cannot, and what the platform costs per hour.

Works without a cluster: node pools come from the rendered chapter-01 manifests, workloads from every chapter's
rendered manifests, instance shapes and prices from the committed price table (helpers.infra.aws).

    pools      node pools as Karpenter creates them; quantities, money, root volumes
    workloads  what each pod asks for and where it may run
    fit        which pool hosts a workload, and why not the others
    cost       the hourly bill: pods packed onto the cheapest instances that fit, the optional parts priced apart,
               and the spend cap
"""

from __future__ import annotations

from helpers.infra.scheduling.pools import (  # noqa: F401 - the public surface of the package
    GP3_PER_GB_MONTH,
    GP3_PER_IOPS_MONTH,
    GP3_PER_MIBS_MONTH,
    HOURS_PER_MONTH,
    INSTANCE_PREFIXES,
    NODEPOOL_CHAPTER,
    PRICE_PLACES,
    Pool,
    Requirement,
    RootVolume,
    UNKNOWN,
    instance_attribute,
    money,
    node_pools,
    pools_from_manifests,
    quantity_cpu,
    quantity_gib,
    taint_text,
)
from helpers.infra.scheduling.workloads import (  # noqa: F401 - the public surface of the package
    GPU_TOLERATION,
    OPTIONAL_PARTS,
    OptionalPart,
    Workload,
    X86_TOLERATION,
    default_workloads,
    is_default,
    optional_part,
    planned_workloads,
    platform_workloads,
    with_additive_parts,
    with_part,
    workloads_from_manifests,
)
from helpers.infra.scheduling.fit import (  # noqa: F401 - the public surface of the package
    Allocatable,
    DAEMONSET_CPU_M,
    DAEMONSET_MEMORY_MIB,
    EVICTION_RESERVED_MIB,
    MAX_PODS,
    Placement,
    PoolVerdict,
    VM_MEMORY_OVERHEAD,
    allocatable,
    explain,
    kube_reserved_cpu_m,
    placement_rows,
    pool_verdict,
)
from helpers.infra.scheduling.cost import (  # noqa: F401 - the public surface of the package
    COST_EXCLUDES,
    CostPart,
    CostReport,
    EKS_CLUSTER_PER_HOUR,
    SpendCap,
    node_changes,
    optional_costs,
    platform_cost,
    spend_caps,
)
