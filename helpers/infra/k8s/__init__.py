"""Talk to the workshop's Kubernetes cluster (eks target only).

    client     reachability (fails fast with ClusterUnreachable: what is wrong, and the fix), server-side
               apply, waits with progress bars, events and logs
    port_forward  `kubectl port-forward` for a with-block (the pinned kubectl when none is on PATH)
    pending    a decoder that turns Pending-pod events into a plain-language cause and fix (works offline)
    operators  the pinned Helm charts the workshop installs, and monitor coverage of the model pods
    releases   what a release is: chart, values, generated Secrets, IAM (Pod Identity) as data
    addons     the karpenter flavour's add-ons (Karpenter, EBS CSI driver, Load Balancer Controller), and a check
               that a cluster has what its flavour needs
"""

from __future__ import annotations

from helpers.infra.k8s.client import (  # noqa: F401 - the public surface of the package
    Applied,
    ClusterInfo,
    ClusterUnreachable,
    FIELD_MANAGER,
    KUBECONFIG_FIX,
    apply,
    cluster_reachable,
    condition_status,
    diagnose_pending,
    dynamic_client,
    events_for,
    get_object,
    is_cluster_reachable,
    job_logs,
    pod_logs,
    print_events,
    report_pods,
    wait_for_condition,
    wait_for_nodes,
    wait_for_rollout,
)
from helpers.infra.k8s.pending import (  # noqa: F401 - the public surface of the package
    Diagnosis,
    decode_events,
    decode_pending,
)
from helpers.infra.k8s.operators import (  # noqa: F401 - the public surface of the package
    HelmRelease,
    MONITORING_NAMESPACE,
    RAY_METRICS_PORT,
    RAY_POD_LABELS,
    VLLM_METRICS_PORT,
    VLLM_POD_LABELS,
    helm_available,
    install_operators,
    label_selector_matches,
    monitor_coverage,
    monitor_selects,
    monitors,
    operator_releases,
)
from helpers.infra.k8s.releases import GeneratedSecret, Policy, PodIdentity  # noqa: F401 - the public surface
from helpers.infra.k8s.addons import AddonCheck, addon_checks, require_addons  # noqa: F401 - the public surface
