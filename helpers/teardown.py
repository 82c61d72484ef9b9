"""Plan (and, on the eks target, perform) the teardown of what the workshop created, in the cluster and in AWS.

The plan is computed from the rendered manifests, so it can be printed and tested without a cluster.
It lists exactly what would be deleted, in dependency order (workloads before the volumes they mount,
volumes before the node pools whose nodes run the storage driver, node pools before their node classes,
namespaces last), and it only ever contains objects that carry the workshop label. Nothing in a
protected namespace (kube-system, ...) is ever planned or deleted. Later chapters extend the plan simply
by adding manifests: every chapter's objects are in render(). Within one kind, consumers go before what
they use: the agent, MCP servers, gateway, Langfuse, model servers, RayService (CHAPTER_ORDER).

`full_plan()` adds what is not a manifest: the Helm releases (Langfuse, the operators: each uninstalled only
after the objects it manages are gone, Karpenter after the node pools it drains) and the AWS resources
(the OpenSearch CloudFormation stack of manifests/06-vector/cloudformation, the ECR repositories of the
workshop's images). `verify_aws()` then proves nothing billable is left: no Karpenter-launched instances of
the workshop's node pools, no load balancers or EBS volumes of its namespaces, no OpenSearch domain and no
CloudFormation stack carrying its tag. Every AWS step and check is filtered by the workshop's tag (or name).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helpers.config import ROOT, Settings, get_settings
from helpers.manifests import AWS_TAG, PART_OF, PART_OF_LABEL, Manifest, object_ref, render

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
    "08-agent", "07-mcp", "04-gateway", "05-observability", "02-vllm", "03-ray", "06-vector", "01-nodepools",
)
# Kinds of the plan that are not Kubernetes objects, and the pseudo apiVersion their steps carry.
HELM_KINDS = ("HelmRelease", "OperatorRelease")
AWS_KINDS = ("CloudFormationStack", "ECRRepository")
WORKSHOP_NAMESPACES_EXTRA = ("langfuse",)  # namespaces of Helm releases the workshop installs (not its manifests)


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


def plan(
    items: Iterable[Manifest | dict[str, Any]] | None = None,
    flavour: str | None = None,
    target: str | None = None,
) -> TeardownPlan:
    """The teardown plan for the given objects (default: every manifest of the workshop, on-demand ones too)."""
    if items is None:
        items = render(target=target, flavour=flavour, include_on_demand=True)
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


# ---------------------------------------------------------------- beyond the manifests: Helm releases and AWS

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
    """The Helm releases the workshop installs (Langfuse, operators) and the volumes Helm leaves behind."""
    from helpers import k8s
    from helpers.manifests import chapter_parameters, default_flavour

    settings = settings or get_settings()
    flavour = flavour or default_flavour(settings)
    entries = []
    if (ROOT / "manifests" / "05-observability" / "parameters.yaml").exists():
        langfuse = chapter_parameters("05-observability")["langfuse"]
        entries.append(plan_entry(HELM_API, "HelmRelease", langfuse["release"], langfuse["namespace"],
                               "05-observability", chart=langfuse["chart"]))
        # `helm uninstall` keeps the PersistentVolumeClaims of a chart's StatefulSets (PostgreSQL, ClickHouse, ...)
        entries.append(plan_entry(HELM_API, "PersistentVolumeClaims", f"app.kubernetes.io/instance={langfuse['release']}",
                               langfuse["namespace"], "05-observability"))
    for release in k8s.operator_releases(flavour, settings.namespace, settings.cluster_name):
        entries.append(plan_entry(HELM_API, "OperatorRelease", release.name, release.namespace, "01-nodepools",
                               chart=release.chart))
    return entries


def image_repositories() -> list[str]:
    """The ECR repositories of the workshop's images: every `image.repository` of every chapter's parameters."""
    from helpers.manifests import chapter_parameters, chapters

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
    from helpers.vectorstore import domain

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


def full_plan(flavour: str | None = None, settings: Settings | None = None, target: str = "eks") -> TeardownPlan:
    """Everything teardown would remove, in one dependency order: Kubernetes objects, Helm releases, AWS resources."""
    from helpers.manifests import render

    settings = settings or get_settings()
    items: list[Manifest | dict[str, Any]] = list(
        render(target=target, flavour=flavour, include_on_demand=True, settings=settings))
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
    if step.kind == "PersistentVolumeClaims":
        return f"kubectl delete pvc --namespace {step.namespace} --selector {step.name}"
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


# ---------------------------------------------------------------- performing the non-Kubernetes steps


def _has_workshop_tag(tags: Iterable[dict[str, str]] | dict[str, str]) -> bool:
    pairs = tags.items() if isinstance(tags, dict) else ((t.get("Key"), t.get("Value")) for t in tags)
    return any(k == key and v == value for k, v in pairs for key, value in AWS_TAG.items())


def _run_helm(step: Step, dry_run: bool) -> str:
    import json
    import shutil
    import subprocess

    if not shutil.which("helm"):
        return f"skipped {step.ref}: helm is not installed (https://helm.sh/docs/intro/install/)"
    listed = subprocess.run(["helm", "list", "--namespace", str(step.namespace), "--filter", f"^{step.name}$",
                             "--output", "json"], capture_output=True, text=True)
    releases = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
    if not releases:
        return f"absent  {step.ref}"
    if dry_run:
        return f"would uninstall {step.ref} (chart {releases[0].get('chart')})"
    done = subprocess.run(["helm", "uninstall", step.name, "--namespace", str(step.namespace), "--wait"],
                          capture_output=True, text=True)
    return f"uninstalled {step.ref}" if done.returncode == 0 else f"failed {step.ref}: {done.stderr.strip()[-200:]}"


def _delete_pvcs(step: Step, dry_run: bool) -> str:
    from kubernetes import client

    core = client.CoreV1Api()
    claims = core.list_namespaced_persistent_volume_claim(step.namespace, label_selector=step.name).items
    if not claims:
        return f"absent  {step.ref}"
    names = ", ".join(c.metadata.name for c in claims)
    if dry_run:
        return f"would delete PVCs {names}"
    for c in claims:
        core.delete_namespaced_persistent_volume_claim(c.metadata.name, step.namespace)
    return f"deleted PVCs {names}"


def _delete_stack(step: Step, dry_run: bool, cfn: Any) -> str:
    from botocore.exceptions import ClientError

    try:
        stack = cfn.describe_stacks(StackName=step.name)["Stacks"][0]
    except ClientError:
        return f"absent  {step.ref}"
    if not _has_workshop_tag(stack.get("Tags", [])):
        return f"skipped {step.ref}: it lacks the tag {AWS_TAG}"
    if dry_run:
        return f"would delete {step.ref} ({stack['StackStatus']})"
    cfn.delete_stack(StackName=step.name)
    cfn.get_waiter("stack_delete_complete").wait(StackName=step.name, WaiterConfig={"Delay": 30, "MaxAttempts": 80})
    return f"deleted {step.ref}"


def _delete_repository(step: Step, dry_run: bool, ecr: Any) -> str:
    from botocore.exceptions import ClientError

    if not step.name.startswith(IMAGE_PREFIX):
        return f"refused {step.ref}: not named {IMAGE_PREFIX}..."
    try:
        ecr.describe_repositories(repositoryNames=[step.name])
    except ClientError:
        return f"absent  {step.ref}"
    if dry_run:
        return f"would delete {step.ref} and its images"
    ecr.delete_repository(repositoryName=step.name, force=True)
    return f"deleted {step.ref}"


def execute_all(teardown: TeardownPlan, dry_run: bool = True, settings: Settings | None = None,
                clients: dict[str, Any] | None = None) -> list[str]:
    """Carry out a full plan: Kubernetes objects with execute(), Helm releases with helm, AWS resources with boto3."""
    from helpers import aws

    settings = settings or get_settings()
    clients = clients or {}
    report: list[str] = []
    batch: list[Step] = []

    def flush() -> None:
        if batch:
            report.extend(execute(TeardownPlan(tuple(batch), ()), dry_run=dry_run))
            batch.clear()

    for step in teardown.steps:
        if step.api_version not in (HELM_API, AWS_API):
            batch.append(step)
            continue
        flush()
        if step.kind in ("HelmRelease", "OperatorRelease"):
            report.append(_run_helm(step, dry_run))
        elif step.kind == "PersistentVolumeClaims":
            report.append(_delete_pvcs(step, dry_run))
        elif step.kind == "CloudFormationStack":
            cfn = clients.get("cloudformation") or aws.client("cloudformation", settings.aws_region)
            report.append(_delete_stack(step, dry_run, cfn))
        elif step.kind == "ECRRepository":
            ecr = clients.get("ecr") or aws.client("ecr", settings.aws_region)
            report.append(_delete_repository(step, dry_run, ecr))
    flush()
    return report


# ---------------------------------------------------------------- verification: nothing billable is left


@dataclass(frozen=True)
class Leftover:
    """One verification check: what was looked for, what is still there (empty: nothing), how it was found."""

    check: str
    remaining: tuple[str, ...]
    how: str

    @property
    def ok(self) -> bool:
        """True when nothing of this kind is left."""
        return not self.remaining

    def row(self) -> dict[str, str]:
        """A table row."""
        return {"check": self.check, "result": "nothing left" if self.ok else f"{len(self.remaining)} LEFT",
                "remaining": ", ".join(self.remaining), "how": self.how}


@dataclass(frozen=True)
class Verification:
    """The checks, or why they could not run (no credentials)."""

    checks: tuple[Leftover, ...]
    skipped: str = ""

    @property
    def clean(self) -> bool | None:
        """True: nothing billable left; False: something is; None: not verified."""
        return None if self.skipped else all(c.ok for c in self.checks)

    def rows(self) -> list[dict[str, str]]:
        """The checks as table rows."""
        return [c.row() for c in self.checks]


def _tags(items: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or [] if "Key" in t}


def workshop_namespaces(settings: Settings | None = None) -> tuple[str, ...]:
    """The namespaces the workshop's volumes and load balancers can come from."""
    settings = settings or get_settings()
    return (settings.namespace, *WORKSHOP_NAMESPACES_EXTRA)


def workshop_node_pools(flavour: str | None = None, settings: Settings | None = None) -> tuple[str, ...]:
    """The names of the workshop's NodePools (from chapter 01's manifests)."""
    from helpers.manifests import render_chapter

    return tuple(sorted(m.name for m in render_chapter("01-nodepools", "eks", flavour, settings=settings)
                        if m.kind == "NodePool"))


def leftover_instances(ec2: Any, cluster: str, pools: Iterable[str]) -> Leftover:
    """Running instances Karpenter (or Auto Mode) launched for the workshop's node pools of this cluster."""
    pools = set(pools)
    found = []
    states = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    for key in ("karpenter.sh/nodepool", "eks:kubernetes-node-pool-name"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[states, {"Name": "tag-key", "Values": [key]}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    tags = _tags(instance.get("Tags"))
                    mine = tags.get("eks:eks-cluster-name") == cluster or f"kubernetes.io/cluster/{cluster}" in tags
                    if mine and (tags.get(key) in pools or _has_workshop_tag(tags)):
                        found.append(f"{instance['InstanceId']} ({instance.get('InstanceType')}, pool {tags.get(key)})")
    return Leftover("EC2 instances launched for the workshop's node pools", tuple(sorted(set(found))),
                    f"ec2:DescribeInstances, tag karpenter.sh/nodepool or eks:kubernetes-node-pool-name in "
                    f"{sorted(pools)}, cluster {cluster}")


def leftover_load_balancers(elbv2: Any, cluster: str, namespaces: Iterable[str]) -> Leftover:
    """Load balancers the AWS Load Balancer Controller (or Auto Mode) made for the workshop's Services/Ingresses."""
    namespaces = set(namespaces)
    arns = {lb["LoadBalancerArn"]: lb["LoadBalancerName"]
            for page in elbv2.get_paginator("describe_load_balancers").paginate()
            for lb in page.get("LoadBalancers", [])}
    found = []
    arn_list = list(arns)
    for i in range(0, len(arn_list), 20):  # DescribeTags takes at most 20 ARNs
        for desc in elbv2.describe_tags(ResourceArns=arn_list[i:i + 20]).get("TagDescriptions", []):
            tags = _tags(desc.get("Tags"))
            of_cluster = cluster in (tags.get("elbv2.k8s.aws/cluster"), tags.get("eks:eks-cluster-name"))
            stack = tags.get("ingress.k8s.aws/stack") or tags.get("service.k8s.aws/stack") or ""
            if _has_workshop_tag(tags) or (of_cluster and stack.split("/")[0] in namespaces):
                found.append(f"{arns[desc['ResourceArn']]} ({stack or 'tagged workshop'})")
    return Leftover("load balancers of the workshop's Ingresses and Services", tuple(sorted(found)),
                    f"elbv2:DescribeLoadBalancers + DescribeTags, cluster {cluster}, namespaces {sorted(namespaces)}")


def leftover_volumes(ec2: Any, namespaces: Iterable[str]) -> Leftover:
    """EBS volumes the CSI driver created for PVCs in the workshop's namespaces (or tagged with its tag)."""
    namespaces = sorted(namespaces)
    filters = [
        [{"Name": "tag:kubernetes.io/created-for/pvc/namespace", "Values": namespaces}],
        [{"Name": f"tag:{k}", "Values": [v]} for k, v in AWS_TAG.items()],
    ]
    found = []
    for flt in filters:
        for page in ec2.get_paginator("describe_volumes").paginate(Filters=flt):
            for volume in page.get("Volumes", []):
                tags = _tags(volume.get("Tags"))
                if tags.get("kubernetes.io/created-for/pvc/namespace") in namespaces or _has_workshop_tag(tags):
                    pvc = tags.get("kubernetes.io/created-for/pvc/name", "-")
                    found.append(f"{volume['VolumeId']} ({volume.get('Size')} GiB, {volume.get('State')}, pvc {pvc})")
    return Leftover("EBS volumes of the workshop's PVCs", tuple(sorted(set(found))),
                    f"ec2:DescribeVolumes, tag kubernetes.io/created-for/pvc/namespace in {namespaces} or {AWS_TAG}")


def leftover_domains(opensearch: Any) -> Leftover:
    """OpenSearch domains carrying the workshop's tag."""
    found = []
    for entry in opensearch.list_domain_names().get("DomainNames", []):
        name = entry["DomainName"]
        arn = opensearch.describe_domain(DomainName=name)["DomainStatus"]["ARN"]
        if _has_workshop_tag(opensearch.list_tags(ARN=arn).get("TagList", [])):
            found.append(name)
    return Leftover("OpenSearch domains", tuple(sorted(found)),
                    f"opensearch:ListDomainNames + ListTags, tag {AWS_TAG}")


def leftover_stacks(cfn: Any) -> Leftover:
    """CloudFormation stacks carrying the workshop's tag that are not deleted."""
    found = []
    for page in cfn.get_paginator("describe_stacks").paginate():
        for stack in page.get("Stacks", []):
            if _has_workshop_tag(stack.get("Tags", [])) and stack.get("StackStatus") != "DELETE_COMPLETE":
                found.append(f"{stack['StackName']} ({stack['StackStatus']})")
    return Leftover("CloudFormation stacks", tuple(sorted(found)), f"cloudformation:DescribeStacks, tag {AWS_TAG}")


def leftover_repositories(ecr: Any) -> Leftover:
    """ECR repositories of the workshop's images (named llm-eks-workshop/...)."""
    found = [r["repositoryName"] for page in ecr.get_paginator("describe_repositories").paginate()
             for r in page.get("repositories", []) if r["repositoryName"].startswith(IMAGE_PREFIX)]
    return Leftover("ECR repositories (storage is billed per GB-month)", tuple(sorted(found)),
                    f"ecr:DescribeRepositories, name {IMAGE_PREFIX}*")


def verify_aws(settings: Settings | None = None, clients: dict[str, Any] | None = None,
               flavour: str | None = None) -> Verification:
    """Check AWS for anything billable the workshop left behind; skipped with the reason when AWS is unavailable."""
    from helpers import aws

    settings = settings or get_settings()
    region = settings.aws_region
    clients = dict(clients or {})
    try:
        if not clients:
            aws.identity()  # one cheap call: no credentials -> a clear message instead of six failures
        for service in ("ec2", "elbv2", "opensearch", "cloudformation", "ecr"):
            clients.setdefault(service, aws.client(service, region))
        namespaces = workshop_namespaces(settings)
        checks = (
            leftover_instances(clients["ec2"], settings.cluster_name, workshop_node_pools(flavour, settings)),
            leftover_load_balancers(clients["elbv2"], settings.cluster_name, namespaces),
            leftover_volumes(clients["ec2"], namespaces),
            leftover_domains(clients["opensearch"]),
            leftover_stacks(clients["cloudformation"]),
            leftover_repositories(clients["ecr"]),
        )
    except aws.AwsUnavailable as error:
        return Verification((), f"not verified: {error.message} Fix: {error.fix}")
    except Exception as error:  # botocore errors of the individual calls
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, BotoCoreError | ClientError):
            return Verification((), f"not verified: AWS refused a check ({error}). Fix: grant the read-only "
                                    "Describe/List permissions named in the table's `how` column.")
        raise
    return Verification(checks)
