"""Karpenter's restricted node labels: which NodePool template labels and requirement keys a provisioner refuses.

Karpenter does not reject such a NodePool at admission (the CRD's CEL rules cover only part of it): its controller
marks the pool `ValidationSucceeded=False` and never launches a node from it. No schema states the rule, so the
workshop transcribes it from the upstream sources and checks every rendered NodePool offline.

Three rule sets, and the one that fires is named in every finding:

- `karpenter v1.0-1.8` (kubernetes-sigs/karpenter v1.8.0 pkg/apis/v1/labels.go, IsRestrictedNodeLabel): refused are
  the domains kubernetes.io, k8s.io and karpenter.sh (plain suffix match, so app.kubernetes.io is refused too),
  plus karpenter.k8s.aws from the AWS provider, and kubernetes.io/hostname; allowed are the well-known labels and
  the node.kubernetes.io, node-restriction.kubernetes.io and kops.k8s.io domains. The error reads "label ... is
  restricted" (aws/karpenter-provider-aws#6495 shows it for app.kubernetes.io/managed-by).
- `karpenter v1.9+` (v1.14.1 pkg/apis/v1/labels.go IsRestrictedLabel, after kubernetes-sigs/karpenter#2586): only
  the karpenter.sh domain (and karpenter.k8s.aws for the AWS provider, aws/karpenter-provider-aws v1.14.1
  pkg/apis/v1/labels.go) and kubernetes.io/hostname, except the well-known labels. A template label
  karpenter.sh/nodepool is refused too (nodepool_validation.go).
- `eks auto mode`: EKS Auto Mode additionally refuses template labels in the eks.amazonaws.com domain (suffix
  match; the admission error "label domain "eks.amazonaws.com" is restricted" quoted in awslabs/ai-on-eks#376);
  in requirements its documented eks.amazonaws.com/* well-known labels are allowed (EKS User Guide, "Create a
  Node Pool for EKS Auto Mode").

Why the strict union for BOTH flavours: AWS publishes neither the Karpenter version inside EKS Auto Mode nor
whether it still applies the pre-1.9 kubernetes.io rule, and a learner's self-managed Karpenter may be older
than the chart the workshop pins (1.14.1). A key that every rule set accepts works everywhere; node labels the
workshop needs live in its own domain (llm-eks-workshop/pool, llm-eks-workshop/accelerator), and the workshop
label app.kubernetes.io/part-of stays on the NodePool object itself, where teardown looks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from helpers.infra.manifests.objects import Finding, object_ref

# kubernetes-sigs/karpenter v1.14.1 pkg/apis/v1/labels.go
RESTRICTED_LABEL_DOMAINS = frozenset({"karpenter.sh"})  # L69-71 sets.New(apis.Group)
RESTRICTED_LABELS = frozenset({"kubernetes.io/hostname"})  # L115-117 v1.LabelHostname
WELL_KNOWN_LABELS = frozenset({  # L75-84
    "karpenter.sh/nodepool", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type", "kubernetes.io/arch", "kubernetes.io/os", "karpenter.sh/capacity-type",
    "node.kubernetes.io/windows-build",
})
NODEPOOL_LABEL = "karpenter.sh/nodepool"  # Karpenter sets it itself; a template may not (nodepool_validation.go)

# v1.0.0 .. v1.8.x only (removed by kubernetes-sigs/karpenter 37f5de7ac, #2586, first released in v1.9.0)
LEGACY_RESTRICTED_LABEL_DOMAINS = frozenset({"kubernetes.io", "k8s.io", "karpenter.sh"})
LEGACY_LABEL_DOMAIN_EXCEPTIONS = frozenset({"kops.k8s.io", "node.kubernetes.io", "node-restriction.kubernetes.io"})

# aws/karpenter-provider-aws v1.14.1 pkg/apis/v1/labels.go init() L31-74, L106-108, L143-172
AWS_RESTRICTED_LABEL_DOMAINS = frozenset({"karpenter.k8s.aws"})
AWS_WELL_KNOWN_LABELS = frozenset({f"karpenter.k8s.aws/{name}" for name in (
    "capacity-reservation-id", "capacity-reservation-type", "capacity-reservation-interruptible",
    "instance-hypervisor", "instance-encryption-in-transit-supported", "instance-category",
    "instance-capability-flex", "instance-family", "instance-generation", "instance-size", "instance-local-nvme",
    "instance-cpu", "instance-cpu-manufacturer", "instance-cpu-sustained-clock-speed-mhz", "instance-memory",
    "instance-ebs-bandwidth", "instance-network-bandwidth", "instance-gpu-name", "instance-gpu-manufacturer",
    "instance-gpu-count", "instance-gpu-memory", "instance-accelerator-name", "instance-accelerator-manufacturer",
    "instance-accelerator-count", "instance-tenancy", "placement-group-id", "placement-group-partition",
)} | {"topology.k8s.aws/zone-id", "node.kubernetes.io/windows-build"})

# EKS Auto Mode: the extra restricted domain, and the eks.amazonaws.com labels its NodePool requirements accept
# (EKS User Guide "Create a Node Pool for EKS Auto Mode", table "EKS Auto Mode Supported").
AUTO_MODE_RESTRICTED_DOMAIN = "eks.amazonaws.com"
AUTO_MODE_WELL_KNOWN_LABELS = frozenset({f"eks.amazonaws.com/{name}" for name in (
    "instance-hypervisor", "compute-type", "instance-encryption-in-transit-supported", "instance-category",
    "instance-generation", "instance-family", "instance-size", "instance-cpu", "instance-cpu-manufacturer",
    "instance-memory", "instance-ebs-bandwidth", "instance-network-bandwidth", "instance-gpu-name",
    "instance-gpu-manufacturer", "instance-gpu-count", "instance-gpu-memory", "instance-local-nvme",
)})

RULE = "karpenter-restricted-label"
TEMPLATE_LABELS = "spec.template.metadata.labels"
REQUIREMENTS = "spec.template.spec.requirements"
FIX = ("Use a label outside the restricted domains for nodes (e.g. llm-eks-workshop/<name>); keep "
       "app.kubernetes.io/* on the NodePool's own metadata.labels, where teardown finds it.")


def label_domain(key: str) -> str:
    """GetLabelDomain: the part of a label key before the first '/', or '' when there is none."""
    head, sep, _ = key.partition("/")
    return head if sep else ""


def refused_by_v1_9(key: str, where: str = TEMPLATE_LABELS) -> str | None:
    """Karpenter v1.9 and later (core + AWS provider): why the key is refused, or None."""
    if where == TEMPLATE_LABELS and key == NODEPOOL_LABEL:
        return f"label {key} is set by Karpenter itself and may not be in a template"
    if key in WELL_KNOWN_LABELS | AWS_WELL_KNOWN_LABELS:
        return None
    domain = label_domain(key)
    if any(domain == d or domain.endswith("." + d) for d in RESTRICTED_LABEL_DOMAINS | AWS_RESTRICTED_LABEL_DOMAINS):
        return f"using label {key} is not allowed as it might interfere with the internal provisioning logic"
    if key in RESTRICTED_LABELS:
        return f"using label {key} is not allowed as it might interfere with the internal provisioning logic"
    return None


def refused_by_v1_8(key: str, where: str = TEMPLATE_LABELS) -> str | None:
    """Karpenter v1.0 to v1.8 (core + AWS provider): why the key is refused, or None."""
    if where == TEMPLATE_LABELS and key == NODEPOOL_LABEL:
        return f"label {key} is set by Karpenter itself and may not be in a template"
    if key in WELL_KNOWN_LABELS | AWS_WELL_KNOWN_LABELS:
        return None
    domain = label_domain(key)
    if any(domain.endswith(e) for e in LEGACY_LABEL_DOMAIN_EXCEPTIONS):  # a plain suffix match, as in the Go code
        return None
    if any(domain.endswith(d) for d in LEGACY_RESTRICTED_LABEL_DOMAINS | AWS_RESTRICTED_LABEL_DOMAINS) \
            or key in RESTRICTED_LABELS:
        return f"label {key} is restricted; specify a well known label or a custom label that does not use a " \
               "restricted domain"
    return None


def refused_by_auto_mode(key: str, where: str = TEMPLATE_LABELS) -> str | None:
    """EKS Auto Mode's extra rule (the eks.amazonaws.com domain): why the key is refused, or None."""
    if where == REQUIREMENTS and key in AUTO_MODE_WELL_KNOWN_LABELS:
        return None
    if label_domain(key).endswith(AUTO_MODE_RESTRICTED_DOMAIN):
        return f'label domain "{AUTO_MODE_RESTRICTED_DOMAIN}" is restricted'
    return None


RULE_SETS = (
    ("karpenter v1.0-1.8", refused_by_v1_8),
    ("karpenter v1.9+", refused_by_v1_9),
    ("eks auto mode", refused_by_auto_mode),
)


def refusals(key: str, where: str = TEMPLATE_LABELS) -> list[tuple[str, str]]:
    """Every rule set that refuses the key at this place, as (rule set, its error); [] when all accept it."""
    found = []
    for name, refused in RULE_SETS:
        reason = refused(key, where)
        if reason:
            found.append((name, reason))
    return found


def _keys(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    template = (doc.get("spec") or {}).get("template") or {}
    for key in ((template.get("metadata") or {}).get("labels") or {}):
        yield TEMPLATE_LABELS, str(key)
    for i, requirement in enumerate((template.get("spec") or {}).get("requirements") or []):
        if requirement.get("key"):
            yield f"{REQUIREMENTS}[{i}].key", str(requirement["key"])


def nodepool_findings(doc: dict[str, Any]) -> list[Finding]:
    """Findings for a NodePool's template labels and requirement keys that any provisioner would refuse."""
    if doc.get("kind") != "NodePool":
        return []
    findings = []
    for where, key in _keys(doc):
        place = TEMPLATE_LABELS if where == TEMPLATE_LABELS else REQUIREMENTS
        found = refusals(key, place)
        if found:
            rules = "; ".join(f"{name}: {reason}" for name, reason in found)
            findings.append(Finding(object_ref(doc), RULE, f"{where} {key}: refused by {rules}", FIX))
    return findings
