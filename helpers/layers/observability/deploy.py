"""Chapter 05 on EKS: Langfuse (Helm values, generated Secrets, Ingress) and pointing the gateway at it.

Traces: helpers.layers.observability.tracing (one OTel pipeline, Langfuse or Phoenix). This module holds what is specific to
EKS (the pinned Helm chart, its headless initialisation from a Secret, the gateway's patch) and the
Prometheus side (scrape targets on EKS, reading the local metrics endpoints).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.errors import WorkshopError
from helpers.infra import manifests

if TYPE_CHECKING:
    from helpers.target import Target

CHAPTER = "05-observability"
VALUES_TEMPLATE = "langfuse-values.j2"
KEYS_SECRET = "langfuse-keys"  # in the workshop namespace: what the gateway and the agent read


class ObservabilityError(WorkshopError):
    """Something this chapter needs is missing; the message says what to do."""


def parameters() -> dict[str, Any]:
    """The chapter's defaults (manifests/05-observability/parameters.yaml)."""
    return manifests.chapter_parameters(CHAPTER)


# ---------------------------------------------------------------- Langfuse on EKS


def render(t: Target, overrides: dict[str, Any] | None = None) -> list[manifests.Manifest]:
    """The chapter's Kubernetes objects (Langfuse Ingress, metrics Services) for the target."""
    return t.render(CHAPTER, overrides=overrides)


def values_text(t: Target, overrides: dict[str, Any] | None = None) -> str:
    """The Langfuse Helm values file for the target's cluster (no secret in it), comments included."""
    return t.render_text(VALUES_TEMPLATE, chapter=CHAPTER, overrides=overrides)


def helm_command(values_file: Path | str) -> list[str]:
    """The exact, pinned `helm upgrade --install` that installs Langfuse with these values."""
    lf = parameters()["langfuse"]
    return ["helm", "upgrade", "--install", lf["release"], lf["chart"].split("/", 1)[1], "--repo", lf["repo"],
            "--version", str(lf["chart_version"]), "--namespace", lf["namespace"], "--create-namespace",
            "--values", str(values_file), "--wait", "--timeout", "15m"]


def langfuse_secret(existing: dict[str, str] | None = None) -> dict[str, Any]:
    """The Secret Langfuse initialises from: org, project, API keys, first user, passwords; values generated now (or kept)."""
    lf = parameters()["langfuse"]
    old = existing or {}

    def keep(name: str, new: str) -> str:
        return old.get(name) or new

    values = {
        "LANGFUSE_INIT_ORG_ID": lf["org"]["id"], "LANGFUSE_INIT_ORG_NAME": lf["org"]["name"],
        "LANGFUSE_INIT_PROJECT_ID": lf["project"]["id"], "LANGFUSE_INIT_PROJECT_NAME": lf["project"]["name"],
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": keep("LANGFUSE_INIT_PROJECT_PUBLIC_KEY", "pk-lf-" + secrets.token_hex(16)),
        "LANGFUSE_INIT_PROJECT_SECRET_KEY": keep("LANGFUSE_INIT_PROJECT_SECRET_KEY", "sk-lf-" + secrets.token_hex(16)),
        "LANGFUSE_INIT_USER_EMAIL": lf["user_email"], "LANGFUSE_INIT_USER_NAME": "workshop admin",
        "LANGFUSE_INIT_USER_PASSWORD": keep("LANGFUSE_INIT_USER_PASSWORD", secrets.token_urlsafe(18)),
        "SALT": keep("SALT", secrets.token_urlsafe(32)),
        "NEXTAUTH_SECRET": keep("NEXTAUTH_SECRET", secrets.token_urlsafe(32)),
        "ENCRYPTION_KEY": keep("ENCRYPTION_KEY", secrets.token_hex(32)),
        "POSTGRES_PASSWORD": keep("POSTGRES_PASSWORD", secrets.token_urlsafe(24)),
        "CLICKHOUSE_PASSWORD": keep("CLICKHOUSE_PASSWORD", secrets.token_urlsafe(24)),
        "REDIS_PASSWORD": keep("REDIS_PASSWORD", secrets.token_urlsafe(24)),
        "S3_USER": keep("S3_USER", "langfuse"), "S3_PASSWORD": keep("S3_PASSWORD", secrets.token_urlsafe(24)),
    }
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": lf["secret"], "namespace": lf["namespace"], "labels": dict(manifests.COMMON_LABELS)},
            "stringData": values}


def in_cluster_url() -> str:
    """Langfuse's address inside the cluster (the chart's web Service)."""
    lf = parameters()["langfuse"]
    return f"http://{lf['release']}-web.{lf['namespace']}.svc:{lf['web_port']}"


def keys_secret(init: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The Secret the gateway and the agent read in the workshop namespace: the project keys and Langfuse's address."""
    values = init["stringData"]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": KEYS_SECRET, "namespace": namespace, "labels": dict(manifests.COMMON_LABELS)},
            "stringData": {"LANGFUSE_PUBLIC_KEY": values["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"],
                           "LANGFUSE_SECRET_KEY": values["LANGFUSE_INIT_PROJECT_SECRET_KEY"],
                           "LANGFUSE_HOST": in_cluster_url(), "LANGFUSE_OTEL_HOST": in_cluster_url()}}


def gateway_patch() -> dict[str, Any]:
    """The strategic-merge patch that gives the gateway Deployment the Langfuse keys (envFrom the keys Secret)."""
    from helpers.layers import gateway

    name = manifests.chapter_parameters(gateway.CHAPTER)["gateway"]["name"]
    return {"spec": {"template": {"spec": {"containers": [
        {"name": name, "envFrom": [{"secretRef": {"name": KEYS_SECRET}}]}]}}}}


def traced_gateway_config(t: Target) -> str:
    """The gateway config.yaml with chapter 05's tracing switched on (langfuse_otel on eks, traceparent forwarded)."""
    from helpers.layers import gateway

    return gateway.config_text(t, tracing=True)


def install(t: Target, values_file: Path) -> list[str]:
    """With a cluster: create the Secrets (kept across runs), `helm upgrade --install` Langfuse, apply the Ingress."""
    import base64

    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException

    if shutil.which("helm") is None:
        raise ObservabilityError("helm is not installed: https://helm.sh/docs/intro/install/ (then re-run this cell).")
    lf = parameters()["langfuse"]
    t.cluster.require()
    core = k8s_client.CoreV1Api()
    existing: dict[str, str] = {}
    try:
        data = core.read_namespaced_secret(lf["secret"], lf["namespace"]).data or {}
        existing = {k: base64.b64decode(v).decode() for k, v in data.items()}
    except ApiException as error:
        if error.status != 404:
            raise
    namespace_obj = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": lf["namespace"], "labels": dict(manifests.COMMON_LABELS)}}
    init = langfuse_secret(existing)
    t.apply([namespace_obj, init, keys_secret(init, t.settings.namespace)])
    subprocess.run(helm_command(values_file), check=True)
    t.apply(render(t))
    return [lf["secret"], KEYS_SECRET]


