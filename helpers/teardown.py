"""Plan (and, on the eks target, perform) the teardown of what the workshop created in the cluster.

The plan is computed from the rendered manifests, so it can be printed and tested without a cluster.
It lists exactly what would be deleted, in dependency order (workloads before the volumes they mount,
volumes before the node pools whose nodes run the storage driver, node pools before their node classes,
namespaces last), and it only ever contains objects that carry the workshop label. Nothing in a
protected namespace (kube-system, ...) is ever planned or deleted. Later chapters extend the plan simply
by adding manifests: every chapter's objects are in render().
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helpers.manifests import PART_OF, PART_OF_LABEL, Manifest, object_ref, render

PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "default"})

# Deletion order by kind, with why it sits there. Unknown kinds go with the workloads (first).
DELETE_ORDER: list[tuple[tuple[str, ...], str]] = [
    (
        ("Ingress", "ServiceMonitor", "PodMonitor", "HorizontalPodAutoscaler", "PodDisruptionBudget"),
        "front doors and monitors first, so nothing routes to or scrapes pods that are going away",
    ),
    (
        ("RayService", "RayCluster", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"),
        "workloads: their pods stop and release GPUs, volumes and nodes",
    ),
    (
        ("Service", "NetworkPolicy"),
        "services after their pods (a LoadBalancer Service also removes its AWS load balancer)",
    ),
    (("ConfigMap", "Secret", "RoleBinding", "Role", "ServiceAccount"), "configuration the workloads used"),
    (
        ("PersistentVolumeClaim",),
        "volumes after the pods that mount them; reclaimPolicy Delete removes the EBS volumes",
    ),
    (("NodePool",), "node pools: Karpenter drains and terminates their nodes, so EC2 billing stops"),
    (
        ("NodeClass", "EC2NodeClass"),
        "node classes after the node pools that reference them (they wait for their nodes)",
    ),
    (("StorageClass",), "the storage class once no volume needs provisioning"),
    (("ClusterRoleBinding", "ClusterRole"), "cluster-wide permissions"),
    (("Namespace",), "the namespace last: deleting it removes anything left inside"),
]


def delete_rank(kind: str) -> tuple[int, str]:
    """Position of a kind in the deletion order, and why it sits there."""
    for rank, (kinds, why) in enumerate(DELETE_ORDER):
        if kind in kinds:
            return rank, why
    return 1, "workload-like custom resource: removed with the workloads"


@dataclass(frozen=True)
class Step:
    """One object to delete, with its position and the reason for that position."""

    order: int
    api_version: str
    kind: str
    name: str
    namespace: str | None
    why: str

    @property
    def ref(self) -> str:
        """Kind/name or Kind/namespace/name."""
        return "/".join(p for p in (self.kind, self.namespace, self.name) if p)


@dataclass(frozen=True)
class TeardownPlan:
    """What teardown would delete (steps, in order) and what it leaves alone (skipped, with the reason)."""

    steps: tuple[Step, ...]
    skipped: tuple[tuple[str, str], ...]

    def rows(self) -> list[dict[str, str]]:
        """The plan as table rows: order, object, why at this position."""
        return [{"#": str(s.order), "object": s.ref, "why now": s.why} for s in self.steps]

    def __str__(self) -> str:
        lines = [
            f"Teardown plan: {len(self.steps)} object(s), in this order (only objects labelled "
            f"{PART_OF_LABEL}={PART_OF}; never {', '.join(sorted(PROTECTED_NAMESPACES))}):"
        ]
        lines += [f"{s.order:3}. delete {s.ref:45} {s.why}" for s in self.steps]
        if self.skipped:
            lines.append("Left alone:")
            lines += [f"     {ref:50} {reason}" for ref, reason in self.skipped]
        return "\n".join(lines)


def is_protected(doc: dict[str, Any]) -> str | None:
    """Why an object must never be deleted by the workshop (None when it may be)."""
    meta = doc.get("metadata") or {}
    if meta.get("namespace") in PROTECTED_NAMESPACES:
        return f"in protected namespace {meta['namespace']}"
    if doc.get("kind") == "Namespace" and meta.get("name") in PROTECTED_NAMESPACES:
        return "a protected namespace"
    if (meta.get("labels") or {}).get(PART_OF_LABEL) != PART_OF:
        return f"not labelled {PART_OF_LABEL}={PART_OF}"
    return None


def plan(
    items: Iterable[Manifest | dict[str, Any]] | None = None,
    flavour: str | None = None,
    target: str | None = None,
) -> TeardownPlan:
    """The teardown plan for the given objects (default: every manifest of the workshop, on-demand ones too)."""
    if items is None:
        items = render(target=target, flavour=flavour, include_on_demand=True)
    docs = [m.doc if isinstance(m, Manifest) else m for m in items]
    keep: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for doc in docs:
        reason = is_protected(doc)
        if reason:
            skipped.append((object_ref(doc), reason))
        elif object_ref(doc) not in seen:
            seen.add(object_ref(doc))
            keep.append(doc)
    keep.sort(key=lambda d: (delete_rank(str(d.get("kind")))[0], object_ref(d)))
    steps = tuple(
        Step(
            i,
            str(d.get("apiVersion")),
            str(d.get("kind")),
            d["metadata"]["name"],
            d["metadata"].get("namespace"),
            delete_rank(str(d.get("kind")))[1],
        )
        for i, d in enumerate(keep, start=1)
    )
    return TeardownPlan(steps, tuple(skipped))


def execute(teardown: TeardownPlan, dry_run: bool = True, timeout_per_step: float = 600) -> list[str]:
    """Carry out a plan on the cluster (dry_run=True only reports); each object is re-checked live for the label."""
    from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

    from helpers import k8s

    k8s.cluster_reachable()
    dyn = k8s.dynamic_client()
    report: list[str] = []
    for step in teardown.steps:
        if step.namespace in PROTECTED_NAMESPACES or (step.kind == "Namespace" and step.name in PROTECTED_NAMESPACES):
            report.append(f"refused {step.ref}: protected")
            continue
        try:
            resource = dyn.resources.get(api_version=step.api_version, kind=step.kind)
            live = dyn.get(resource, name=step.name, namespace=step.namespace)
        except (NotFoundError, ResourceNotFoundError):
            report.append(f"absent  {step.ref}")
            continue
        labels = (live.to_dict().get("metadata") or {}).get("labels") or {}
        if labels.get(PART_OF_LABEL) != PART_OF:
            report.append(f"skipped {step.ref}: on the cluster it lacks {PART_OF_LABEL}={PART_OF}")
            continue
        if dry_run:
            report.append(f"would delete {step.ref}")
            continue
        dyn.delete(resource, name=step.name, namespace=step.namespace, body={"propagationPolicy": "Foreground"})
        deadline = time.monotonic() + timeout_per_step
        while time.monotonic() < deadline:
            try:
                dyn.get(resource, name=step.name, namespace=step.namespace)
            except NotFoundError:
                break
            time.sleep(5)
        else:
            report.append(
                f"timeout {step.ref}: still deleting after {timeout_per_step:g}s (check its finalizers/events)"
            )
            continue
        report.append(f"deleted {step.ref}")
    return report
