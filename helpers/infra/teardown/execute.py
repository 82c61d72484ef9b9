"""Perform a teardown plan (eks target only): Kubernetes deletions in order, then Helm uninstalls, PVCs, the
CloudFormation stacks and ECR repositories, each only when it is the workshop's: Kubernetes objects and stacks by the
workshop's label or tag, ECR repositories by their name prefix (llm-eks-workshop/); and, only when asked explicitly,
the EKS cluster (delete_cluster: only a cluster carrying the workshop's tag)."""

from __future__ import annotations

import time
from typing import Any

from helpers.config import Settings, get_settings
from helpers.infra.manifests import AWS_TAG, PART_OF, PART_OF_LABEL
from helpers.infra.teardown.plan import (
    AWS_API,
    HELM_API,
    IMAGE_PREFIX,
    PROTECTED_NAMESPACES,
    Step,
    TeardownPlan,
    has_workshop_tag,
)


def execute(teardown: TeardownPlan, dry_run: bool = True, timeout_per_step: float = 600) -> list[str]:
    """Carry out a plan on the cluster (dry_run=True only reports); each object is re-checked live for the label."""
    from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

    from helpers.infra import k8s

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
            hint = (f" (made by `helm --create-namespace`? check it holds nothing else, then `kubectl delete namespace "
                    f"{step.name}`)") if step.kind == "Namespace" else ""
            report.append(f"skipped {step.ref}: on the cluster it lacks {PART_OF_LABEL}={PART_OF}{hint}")
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
    """PVCs (or, for a "Secrets" step, Secrets) selected by the step's label selector, in its namespace."""
    from kubernetes import client

    core = client.CoreV1Api()
    what, listing, delete = ("PVCs", core.list_namespaced_persistent_volume_claim,
                             core.delete_namespaced_persistent_volume_claim) if step.kind == "PersistentVolumeClaims" \
        else ("Secrets", core.list_namespaced_secret, core.delete_namespaced_secret)
    claims = listing(step.namespace, label_selector=step.name).items
    if not claims:
        return f"absent  {step.ref}"
    names = ", ".join(c.metadata.name for c in claims)
    if dry_run:
        return f"would delete {what} {names}"
    for c in claims:
        delete(c.metadata.name, step.namespace)
    return f"deleted {what} {names}"


def _delete_stack(step: Step, dry_run: bool, cfn: Any) -> str:
    from botocore.exceptions import ClientError

    try:
        stack = cfn.describe_stacks(StackName=step.name)["Stacks"][0]
    except ClientError:
        return f"absent  {step.ref}"
    if not has_workshop_tag(stack.get("Tags", [])):
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


def delete_cluster(settings: Settings | None = None, eks: Any = None, confirm: bool = False,
                   name: str | None = None, poll: float = 30, timeout: float = 1800) -> str:
    """Delete the workshop's EKS cluster: opt-in (`confirm=True`; otherwise only what would happen) and only a
    cluster tagged with the workshop's tag (eks:DescribeCluster tags), never another one. Managed node groups go
    first (EKS refuses to delete a cluster that has some); Auto Mode's nodes go with the cluster."""
    from botocore.exceptions import ClientError

    from helpers.infra import aws

    settings = settings or get_settings()
    name = name or settings.cluster_name
    eks = eks or aws.client("eks", settings.aws_region)
    ref = f"EKSCluster/{name}"
    try:
        cluster = eks.describe_cluster(name=name)["cluster"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return f"absent  {ref}"
        raise aws.unavailable(error, f"describe cluster {name}") from error
    if not has_workshop_tag(cluster.get("tags") or {}):
        return (f"refused {ref}: it lacks the tag {AWS_TAG}, so the workshop did not create it; if it is yours to "
                f"delete, run `aws eks delete-cluster --name {name} --region {settings.aws_region}` yourself")
    groups = aws.call(f"list the node groups of {name}", eks.list_nodegroups, clusterName=name).get("nodegroups", [])
    if not confirm:
        extra = f" and its node groups {', '.join(groups)}" if groups else ""
        return (f"would delete {ref}{extra} ({cluster.get('status')}; it bills until deleted): "
                "pass confirm=True to delete it")
    attempts = {"Delay": poll, "MaxAttempts": max(1, int(timeout // max(poll, 1)))}
    for group in groups:
        aws.call(f"delete node group {group}", eks.delete_nodegroup, clusterName=name, nodegroupName=group)
    for group in groups:
        aws.call(f"wait for node group {group} to go", eks.get_waiter("nodegroup_deleted").wait,
                 clusterName=name, nodegroupName=group, WaiterConfig=attempts)
    aws.call(f"delete cluster {name}", eks.delete_cluster, name=name)
    aws.call(f"wait for cluster {name} to go", eks.get_waiter("cluster_deleted").wait, name=name,
             WaiterConfig=attempts)
    return f"deleted {ref}" + (f" (node groups {', '.join(groups)} first)" if groups else "")


def execute_all(teardown: TeardownPlan, dry_run: bool = True, settings: Settings | None = None,
                clients: dict[str, Any] | None = None, delete_eks_cluster: bool = False) -> list[str]:
    """Carry out a full plan: Kubernetes objects with execute(), Helm releases with helm, AWS resources with boto3.

    The EKS cluster itself stays unless `delete_eks_cluster=True` (then, last, delete_cluster(): only when it
    carries the workshop's tag; with dry_run it only says what it would do)."""
    from helpers.infra import aws

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
        elif step.kind in ("PersistentVolumeClaims", "Secrets"):
            report.append(_delete_pvcs(step, dry_run))
        elif step.kind == "CloudFormationStack":
            cfn = clients.get("cloudformation") or aws.client("cloudformation", settings.aws_region)
            report.append(_delete_stack(step, dry_run, cfn))
        elif step.kind == "ECRRepository":
            ecr = clients.get("ecr") or aws.client("ecr", settings.aws_region)
            report.append(_delete_repository(step, dry_run, ecr))
    flush()
    if delete_eks_cluster:
        eks = clients.get("eks") or aws.client("eks", settings.aws_region)
        report.append(delete_cluster(settings, eks, confirm=not dry_run))
    else:
        report.append(f"kept    EKSCluster/{settings.cluster_name}: pass delete_eks_cluster=True to delete it "
                      "(only when it carries the workshop's tag)")
    return report
