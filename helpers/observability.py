"""Chapter 05 on both targets: Langfuse on EKS (Helm values, generated Secret, Ingress), pointing the gateway at it, and metrics.

Traces: helpers.tracing (one OTel pipeline, Langfuse or Phoenix). This module holds what is specific to
EKS (the pinned Helm chart, its headless initialisation from a Secret, the gateway's patch) and the
Prometheus side (scrape targets on EKS, reading the local metrics endpoints).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from helpers import manifests
from helpers.config import Settings, get_settings

CHAPTER = "05-observability"
VALUES_TEMPLATE = "langfuse-values.j2"
KEYS_SECRET = "langfuse-keys"  # in the workshop namespace: what the gateway and the agent read


class ObservabilityError(RuntimeError):
    """Something this chapter needs is missing; the message says what to do."""


def parameters() -> dict[str, Any]:
    """The chapter's defaults (manifests/05-observability/parameters.yaml)."""
    return manifests.chapter_parameters(CHAPTER)


# ---------------------------------------------------------------- Langfuse on EKS


def render(target: str = "eks", overrides: dict[str, Any] | None = None, settings: Settings | None = None
           ) -> list[manifests.Manifest]:
    """The chapter's Kubernetes objects (Langfuse Ingress, metrics Services) for a target."""
    return manifests.render_chapter(CHAPTER, target=target, overrides=overrides, settings=settings)


def values_text(overrides: dict[str, Any] | None = None, settings: Settings | None = None) -> str:
    """The Langfuse Helm values file (no secret in it), comments included."""
    return manifests.render_text(CHAPTER, VALUES_TEMPLATE, target="eks", overrides=overrides, settings=settings)


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
    from helpers import gateway

    name = manifests.chapter_parameters(gateway.CHAPTER)["gateway"]["name"]
    return {"spec": {"template": {"spec": {"containers": [
        {"name": name, "envFrom": [{"secretRef": {"name": KEYS_SECRET}}]}]}}}}


def traced_gateway_config(settings: Settings | None = None) -> str:
    """The eks gateway config.yaml with chapter 05's tracing lines (langfuse_otel, traceparent forwarded)."""
    from helpers import gateway

    return gateway.with_tracing(gateway.config_text("eks", settings), "eks")


def install(namespace: str, values_file: Path, settings: Settings | None = None) -> list[str]:
    """With a cluster: create the Secrets (kept across runs), `helm upgrade --install` Langfuse, apply the Ingress."""
    import base64

    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException

    from helpers import k8s

    if shutil.which("helm") is None:
        raise ObservabilityError("helm is not installed: https://helm.sh/docs/intro/install/ (then re-run this cell).")
    lf = parameters()["langfuse"]
    k8s.cluster_reachable()
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
    k8s.apply([namespace_obj, init, keys_secret(init, namespace)])
    subprocess.run(helm_command(values_file), check=True)
    k8s.apply(render("eks", settings=settings))
    return [lf["secret"], KEYS_SECRET]


# ---------------------------------------------------------------- metrics


def ray_metrics_url(settings: Settings | None = None) -> str | None:
    """The local Ray's Prometheus endpoint (Ray and Ray Serve series), or None when Ray is not running."""
    from helpers.serving_local import ray_temp_dir

    settings = settings or get_settings()
    found = sorted((ray_temp_dir(settings) / "session_latest").glob("metrics_export_port_*"))
    if not found:
        return None
    port = found[0].read_text().strip()
    return f"http://{settings.host}:{port}/metrics" if port.isdigit() else None


def read_metrics(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """GET a Prometheus endpoint: {"status": code, "families": {name: [(labels, value), ...]}} (families empty on error)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    try:
        reply = requests.get(url, headers=headers or {}, timeout=timeout)
    except requests.RequestException as exc:
        return {"status": type(exc).__name__, "families": {}}
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    if reply.status_code == 200 and "json" not in reply.headers.get("content-type", ""):
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                families.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return {"status": reply.status_code, "families": families}


def metric_total(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels match."""
    return sum(v for lab, v in families.get(name, []) if all(lab.get(k) == val for k, val in labels.items()))
