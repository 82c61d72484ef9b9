"""Perform a teardown plan (eks target only): Kubernetes deletions in order, then Helm uninstalls, PVCs, the
CloudFormation stacks and ECR repositories, each only when it carries the workshop's label or tag."""

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


def execute_all(teardown: TeardownPlan, dry_run: bool = True, settings: Settings | None = None,
                clients: dict[str, Any] | None = None) -> list[str]:
    """Carry out a full plan: Kubernetes objects with execute(), Helm releases with helm, AWS resources with boto3."""
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
