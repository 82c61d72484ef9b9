"""Plan (and, on the eks target, perform) the teardown of what the workshop created, in the cluster and in AWS.

The plan is computed from the rendered manifests, so it can be printed and tested without a cluster.
It lists exactly what would be deleted, in dependency order (workloads before the volumes they mount,
volumes before the node pools whose nodes run the storage driver, node pools before their node classes,
namespaces last), and it only ever contains objects that carry the workshop label. Nothing in a
protected namespace (kube-system, ...) is ever planned or deleted. Later chapters extend the plan simply
by adding manifests: every chapter's objects are in render(). Within one kind, consumers go before what
they use: the agent, MCP servers, gateway, Langfuse, model servers, RayService (CHAPTER_ORDER).

`full_plan()` adds what is not a manifest: the Helm releases (Langfuse, the operators: each uninstalled only
after the objects it manages are gone, Karpenter after the node pools it drains) and their namespaces, and the AWS
resources (the OpenSearch CloudFormation stack of manifests/06-vector-index/cloudformation, the ECR repositories of
the workshop's images). The EKS cluster itself is never in the plan: execute.delete_cluster() removes it only when
asked explicitly and only when it carries the workshop's tag. `verify_aws()` then proves nothing billable is left:
no EKS cluster of the workshop, no Karpenter-launched instances of the workshop's node pools, no load balancers or
EBS volumes of its namespaces, no OpenSearch domain and no CloudFormation stack carrying its tag. Every AWS step
and check is filtered by the workshop's tag (or name)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from helpers.config import ROOT, Settings, get_settings
from helpers.infra.manifests import AWS_TAG, PART_OF, PART_OF_LABEL, Manifest, object_ref

if TYPE_CHECKING:
    from helpers.target import Target


PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "default"})


# Deletion order by kind, with why it sits there. Unknown kinds go with the workloads (first).
DELETE_ORDER: list[tuple[tuple[str, ...], str]] = [
    (
        ("Ingress", "ServiceMonitor", "PodMonitor", "HorizontalPodAutoscaler", "PodDisruptionBudget"),
        "front doors and monitors first, so nothing routes to or scrapes pods that are going away",
    ),
    (
        ("RayService", "RayCluster", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "HelmRelease"),
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
    (("IngressClass", "IngressClassParams"), "the ingress class once no Ingress (and no ALB being removed) uses it"),
    (("ClusterRoleBinding", "ClusterRole"), "cluster-wide permissions"),
    (
        ("OperatorRelease",),
        "operators once nothing they manage is left (KubeRay after the RayService, Karpenter after its nodes)",
    ),
    (("Namespace",), "the namespace last: deleting it removes anything left inside"),
    (
        ("CloudFormationStack",),
        "AWS stacks once no pod uses them: the OpenSearch domain, its role and Pod Identity association",
    ),
    (("ECRRepository",), "the image repositories last: nothing can pull from them any more"),
]


# Within one kind, consumers before what they consume: agent, MCP servers, gateway, Langfuse, model servers,
# RayService, vector store, node pools and storage. A chapter not listed (a new one) goes first.
CHAPTER_ORDER: tuple[str, ...] = (
    "08-supervisor-agent", "07-mcp-tools", "04-gateway", "05-observability", "02-vllm", "03-ray-serve", "06-vector-index", "01-cluster-and-nodepools",
)


# Kinds of the plan that are not Kubernetes objects, and the pseudo apiVersion their steps carry.
HELM_KINDS = ("HelmRelease", "OperatorRelease")


AWS_KINDS = ("CloudFormationStack", "ECRRepository")


WORKSHOP_NAMESPACES_EXTRA = ("langfuse",)  # namespaces of Helm releases the workshop installs (not its manifests)
# (the operators' namespaces come from helpers.infra.k8s.operator_releases; helm_entries plans all of them)


def chapter_rank(chapter: str | None) -> int:
    """Position of a chapter among consumers-first deletion (unknown chapters first, no chapter last)."""
    if chapter is None:
        return len(CHAPTER_ORDER) + 1
    prefix = chapter.split("-", 1)[0]
    for i, known in enumerate(CHAPTER_ORDER, start=1):
        if known.split("-", 1)[0] == prefix:
            return i
    return 0


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


def plan(items: Iterable[Manifest | dict[str, Any]]) -> TeardownPlan:
    """The teardown plan for the given objects (full_plan(t) plans everything the workshop creates)."""
    pairs = [(m.doc, m.chapter) if isinstance(m, Manifest) else (m, m.get("x-chapter")) for m in items]
    keep: list[dict[str, Any]] = []
    chapter_of: dict[str, str | None] = {}
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for doc, chapter in pairs:
        reason = is_protected(doc)
        if reason:
            skipped.append((object_ref(doc), reason))
        elif object_ref(doc) not in seen:
            seen.add(object_ref(doc))
            chapter_of[object_ref(doc)] = chapter
            keep.append(doc)
    keep.sort(key=lambda d: (delete_rank(str(d.get("kind")))[0], chapter_rank(chapter_of[object_ref(d)]),
                             object_ref(d)))
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


HELM_API = "helm/v3"


AWS_API = "aws"


IMAGE_PREFIX = f"{PART_OF}/"  # every ECR repository of the workshop is named llm-eks-workshop/<image>


def plan_entry(api_version: str, kind: str, name: str, namespace: str | None, chapter: str, **extra: Any) -> dict[str, Any]:
    """A plan entry for something that is not a Kubernetes object (it carries the label: the workshop made it)."""
    meta: dict[str, Any] = {"name": name, "labels": {PART_OF_LABEL: PART_OF}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "x-chapter": chapter, **extra}


def helm_entries(flavour: str | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The Helm releases the workshop installs (Langfuse, operators), the volumes Helm leaves behind, and the
    namespaces the releases were installed into (langfuse, kuberay, monitoring, ...)."""
    from helpers.infra import k8s
    from helpers.infra.manifests import chapter_parameters, default_flavour

    settings = settings or get_settings()
    flavour = flavour or default_flavour(settings)
    entries = []
    if (ROOT / "manifests" / "05-observability" / "parameters.yaml").exists():
        langfuse = chapter_parameters("05-observability")["langfuse"]
        entries.append(plan_entry(HELM_API, "HelmRelease", langfuse["release"], langfuse["namespace"],
                               "05-observability", chart=langfuse["chart"]))
        # `helm uninstall` keeps the PVCs of the chart's stores (PostgreSQL, Valkey, SeaweedFS: instance=<release>)
        # and of the ClickHouse operator's StatefulSets (instance=<release>-clickhouse / -keeper, operator v0.0.2
        # internal/controller/{clickhouse,keeper}/templates.go); and the Secrets the chart marks
        # helm.sh/resource-policy: keep (<release>-app, <release>-s3-sftp-secret). Both by label, in Langfuse's
        # namespace only.
        release = langfuse["release"]
        instances = ",".join((release, f"{release}-clickhouse", f"{release}-keeper"))
        entries.append(plan_entry(HELM_API, "PersistentVolumeClaims", f"app.kubernetes.io/instance in ({instances})",
                                  langfuse["namespace"], "05-observability"))
        entries.append(plan_entry(HELM_API, "Secrets", f"app.kubernetes.io/instance={release}",
                                  langfuse["namespace"], "05-observability"))
    releases = k8s.operator_releases(flavour, settings.namespace, settings.cluster_name)
    for release in releases:
        entries.append(plan_entry(HELM_API, "OperatorRelease", release.name, release.namespace, "01-cluster-and-nodepools",
                               chart=release.chart))
    # the namespaces those releases live in go last (a protected one, e.g. kube-system, is left alone by plan())
    namespaces = {n: "05-observability" for n in WORKSHOP_NAMESPACES_EXTRA}
    namespaces.update({r.namespace: "01-cluster-and-nodepools" for r in releases if r.namespace not in namespaces})
    entries += [plan_entry("v1", "Namespace", name, None, chapter) for name, chapter in namespaces.items()]
    return entries


def image_repositories() -> list[str]:
    """The ECR repositories of the workshop's images: every `image.repository` of every chapter's parameters."""
    from helpers.infra.manifests import chapter_parameters, chapters

    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            repo = value.get("repository")
            if isinstance(repo, str) and repo.startswith(IMAGE_PREFIX):
                found.add(repo)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for chapter in chapters():
        walk(chapter_parameters(chapter))
    return sorted(found)


def cloudformation_stacks(settings: Settings | None = None) -> list[tuple[str, str]]:
    """(stack name, template) of every CloudFormation template under manifests/*/cloudformation/."""
    from helpers.layers.rag import deploy as domain

    settings = settings or get_settings()
    stacks = []
    for template in sorted((ROOT / "manifests").glob("*/cloudformation/*.yaml")):
        if template.resolve() == domain.TEMPLATE.resolve():
            name = domain.stack_name(settings)
        else:
            name = f"{settings.cluster_name}-{template.stem}"
        stacks.append((name, str(template.relative_to(ROOT))))
    return stacks


def aws_entries(settings: Settings | None = None) -> list[dict[str, Any]]:
    """The AWS resources the workshop creates outside Kubernetes: CloudFormation stacks, ECR repositories."""
    entries = [plan_entry(AWS_API, "CloudFormationStack", name, None, template.split("/")[1], template=template)
               for name, template in cloudformation_stacks(settings)]
    entries += [plan_entry(AWS_API, "ECRRepository", repo, None, "99-images") for repo in image_repositories()]
    return entries


def full_plan(t: Target) -> TeardownPlan:
    """Everything teardown would remove on the target's cluster and account, in one dependency order: Kubernetes
    objects (every chapter's, on-demand ones too), Helm releases, AWS resources."""
    settings, flavour = t.settings, t.flavour
    items: list[Manifest | dict[str, Any]] = list(t.render_all(include_on_demand=True))
    items += helm_entries(flavour, settings)
    items += aws_entries(settings)
    return plan(items)


def planned_kinds(teardown: TeardownPlan) -> set[str]:
    """The kinds a plan removes."""
    return {s.kind for s in teardown.steps}


def how(step: Step, settings: Settings | None = None) -> str:
    """The command a person would type for one step (what execute() does through the APIs)."""
    settings = settings or get_settings()
    region = settings.aws_region
    if step.kind in ("HelmRelease", "OperatorRelease"):
        return f"helm uninstall {step.name} --namespace {step.namespace} --wait"
    if step.kind in ("PersistentVolumeClaims", "Secrets"):
        what = "pvc" if step.kind == "PersistentVolumeClaims" else "secret"
        return f"kubectl delete {what} --namespace {step.namespace} --selector '{step.name}'"
    if step.kind == "CloudFormationStack":
        return f"aws cloudformation delete-stack --stack-name {step.name} --region {region}"
    if step.kind == "ECRRepository":
        return f"aws ecr delete-repository --repository-name {step.name} --region {region} --force"
    scope = f" --namespace {step.namespace}" if step.namespace else ""
    return f"kubectl delete {step.kind.lower()} {step.name}{scope} --cascade=foreground"


def dry_run_rows(teardown: TeardownPlan, settings: Settings | None = None) -> list[dict[str, str]]:
    """The plan as a dry-run list: order, what, where, the equivalent command, why at this position."""
    where = {HELM_API: "Helm", AWS_API: "AWS"}
    return [{"#": str(s.order), "where": where.get(s.api_version, "Kubernetes"), "object": s.ref,
             "command": how(s, settings), "why now": s.why} for s in teardown.steps]


def has_workshop_tag(tags: Iterable[dict[str, str]] | dict[str, str]) -> bool:
    pairs = tags.items() if isinstance(tags, dict) else ((t.get("Key"), t.get("Value")) for t in tags)
    return any(k == key and v == value for k, v in pairs for key, value in AWS_TAG.items())
