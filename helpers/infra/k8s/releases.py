"""What a Helm release of the workshop is: a pinned chart with explicit values, the Secrets generated for it at apply
time (kept across runs), and the AWS permissions its pods get through EKS Pod Identity (as data to show and check)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from helpers.infra.manifests import COMMON_LABELS


@dataclass(frozen=True)
class Policy:
    """An IAM policy a controller's role needs: an AWS managed policy (by ARN) or an upstream policy document."""

    name: str
    source: str  # arn:aws:iam::aws:policy/... for a managed policy, else the URL of the pinned upstream document
    note: str  # what it allows, and why any Resource "*" in it is needed


@dataclass(frozen=True)
class PodIdentity:
    """An EKS Pod Identity association: the IAM role a controller's ServiceAccount gets, and the policies on it."""

    namespace: str
    service_account: str
    role: str  # the role's name; "{cluster}" is replaced by the cluster name
    policies: tuple[Policy, ...]
    created_by: str  # who creates the role and the association (the workshop does not)

    def role_name(self, cluster_name: str) -> str:
        """The role's name for this cluster."""
        return self.role.format(cluster=cluster_name)

    def association_command(self, cluster_name: str, account_id: str = "<ACCOUNT_ID>") -> list[str]:
        """The `aws eks create-pod-identity-association` that binds the ServiceAccount to the role."""
        return ["aws", "eks", "create-pod-identity-association", "--cluster-name", cluster_name,
                "--namespace", self.namespace, "--service-account", self.service_account,
                "--role-arn", f"arn:aws:iam::{account_id}:role/{self.role_name(cluster_name)}"]


@dataclass(frozen=True)
class GeneratedSecret:
    """A Secret a release reads (e.g. Grafana's admin login): fixed keys, and keys generated at apply time and kept."""

    name: str
    namespace: str
    fixed: tuple[tuple[str, str], ...]
    generated: tuple[str, ...]
    why: str

    def manifest(self, existing: dict[str, str] | None = None) -> dict[str, Any]:
        """The Secret with the workshop label: generated keys keep their `existing` value, else get a new one."""
        old = existing or {}
        values = dict(self.fixed) | {key: old.get(key) or secrets.token_urlsafe(24) for key in self.generated}
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(COMMON_LABELS)},
                "stringData": values}


@dataclass(frozen=True)
class HelmRelease:
    """One operator the later chapters need, as a Helm release with a pinned chart version and explicit values."""

    name: str
    chart: str  # "repo/chart", or an oci:// reference
    repo_url: str  # the Helm repository ("" for OCI charts)
    version: str  # exact chart version: never left floating
    namespace: str
    purpose: str
    values: dict[str, Any]
    pods: tuple[tuple[str, str, str], ...] = ()  # (pod, cpu request, memory request) of the Deployments it runs
    secrets: tuple[GeneratedSecret, ...] = ()  # created (or kept) before `helm upgrade --install`
    iam: PodIdentity | None = None  # the AWS permissions its pods need, through EKS Pod Identity

    @property
    def repo_name(self) -> str:
        """The local name `helm repo add` gives the repository (the part before the slash)."""
        return self.chart.split("/", 1)[0] if not self.chart.startswith("oci://") else ""

    @property
    def chart_name(self) -> str:
        """The chart's own name (the last part of the reference), as packaged: <chart_name>-<version>.tgz."""
        return self.chart.rsplit("/", 1)[-1]

    def commands(self, values_file: str) -> list[list[str]]:
        """The helm commands that install or upgrade this release to exactly this chart version."""
        cmds = []
        if self.repo_url:
            cmds.append(["helm", "repo", "add", "--force-update", self.repo_name, self.repo_url])
        cmds.append(
            [
                "helm", "upgrade", "--install", self.name, self.chart,
                "--version", self.version,
                "--namespace", self.namespace, "--create-namespace",
                "--values", values_file,
                "--wait", "--timeout", "10m",
            ]
        )  # fmt: skip
        return cmds

    def uninstall_command(self) -> list[str]:
        """The helm command that removes the release (teardown)."""
        return ["helm", "uninstall", self.name, "--namespace", self.namespace, "--wait"]

    def values_yaml(self) -> str:
        """The release's values as YAML (what --values receives)."""
        import yaml

        return yaml.safe_dump(self.values, sort_keys=False, width=120)


def resources(cpu: str, memory: str, cpu_limit: str | None = None, memory_limit: str | None = None) -> dict:
    """A container's requests and limits (limits default to the requests)."""
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit or cpu, "memory": memory_limit or memory},
    }
