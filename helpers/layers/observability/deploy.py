"""Chapter 05 on EKS: Langfuse (Helm values, generated Secrets, Ingress) and pointing the gateway at it.

Traces: helpers.layers.observability.tracing (one OTel pipeline, Langfuse or Phoenix). This module holds what is
specific to EKS (the pinned Helm chart, its headless initialisation from a Secret, the gateway's patch). Prometheus
scrapes vLLM and Ray on EKS through the PodMonitors of chapter 01's operators (helpers.infra.k8s.operators.monitors).

Langfuse chart 2.0.0 (Langfuse 4.4.0) reads three Secrets, generated here at apply time and kept across runs: the app's
(`langfuse-init`: salts, keys, database passwords, the headless initialisation), Valkey's and SeaweedFS's. Valkey and
SeaweedFS mount their whole Secret as files, so each gets one that holds only its own credentials. Its ClickHouse is a
ClickHouseCluster for the ClickHouse operator, which chapter 01's operators step installs first.
"""

from __future__ import annotations

import json
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
CLICKHOUSE_CRDS = ("clickhouseclusters.clickhouse.com", "keeperclusters.clickhouse.com")  # the operator's kinds
S3_ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")  # SeaweedFS identity: what Langfuse does with its bucket


class ObservabilityError(WorkshopError):
    """Something this chapter needs is missing; the message says what to do."""


def parameters() -> dict[str, Any]:
    """The chapter's defaults (manifests/05-observability/parameters.yaml)."""
    return manifests.chapter_parameters(CHAPTER)


# ---------------------------------------------------------------- Langfuse on EKS


def render(t: Target, overrides: dict[str, Any] | None = None) -> list[manifests.Manifest]:
    """The chapter's Kubernetes objects (the Langfuse Ingress) for the target."""
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


def _secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    lf = parameters()["langfuse"]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": lf["namespace"], "labels": dict(manifests.COMMON_LABELS)},
            "stringData": values}


def langfuse_secret(existing: dict[str, str] | None = None) -> dict[str, Any]:
    """The Secret Langfuse initialises from: org, project, API keys, first user, app secrets, database passwords;
    values generated now (or kept from `existing`). Pods read it key by key (env secretKeyRef), never whole."""
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
        "CLICKHOUSE_PASSWORD": keep("CLICKHOUSE_PASSWORD", secrets.token_urlsafe(24)),
        "POSTGRES_USER": "langfuse", "POSTGRES_DB": "langfuse",  # = postgresql.auth.username / .database in the values
        "POSTGRES_PASSWORD": keep("POSTGRES_PASSWORD", secrets.token_urlsafe(24)),
        "POSTGRES_SUPERUSER_PASSWORD": keep("POSTGRES_SUPERUSER_PASSWORD", secrets.token_urlsafe(24)),
    }
    return _secret(lf["secret"], values)


def valkey_secret(existing: dict[str, str] | None = None) -> dict[str, Any]:
    """Valkey's users (key `default`: the password Langfuse connects with); Valkey mounts this whole Secret."""
    # token_urlsafe: nothing to URL-encode in the REDIS_CONNECTION_STRING the chart builds from it (it does not encode)
    password = (existing or {}).get("default") or secrets.token_urlsafe(24)
    return _secret(parameters()["langfuse"]["valkey_secret"], {"default": password})


def s3_secret(existing: dict[str, str] | None = None) -> dict[str, Any]:
    """SeaweedFS's S3 credentials and its identities file (one identity: Langfuse); SeaweedFS mounts it whole."""
    old = existing or {}
    access, secret_key = old.get("accessKey") or "langfuse", old.get("secretKey") or secrets.token_urlsafe(24)
    identities = {"identities": [{"name": access, "credentials": [{"accessKey": access, "secretKey": secret_key}],
                                  "actions": list(S3_ACTIONS)}]}
    return _secret(parameters()["langfuse"]["s3_secret"],
                   {"accessKey": access, "secretKey": secret_key, "seaweedfs_s3_config": json.dumps(identities)})


def langfuse_secrets(existing: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """The three Secrets the chart's values name, with values kept from `existing` (by Secret name) or generated."""
    lf, old = parameters()["langfuse"], existing or {}
    return [langfuse_secret(old.get(lf["secret"])), valkey_secret(old.get(lf["valkey_secret"])),
            s3_secret(old.get(lf["s3_secret"]))]


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


def _read_secrets(names: list[str], namespace: str) -> dict[str, dict[str, str]]:
    import base64

    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException

    core, found = k8s_client.CoreV1Api(), {}
    for name in names:
        try:
            data = core.read_namespaced_secret(name, namespace).data or {}
        except ApiException as error:
            if error.status != 404:
                raise
            continue
        found[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
    return found


def require_clickhouse_operator() -> None:
    """Fail with the fix when the ClickHouse operator's kinds are missing (Langfuse's ClickHouse needs them)."""
    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException

    api = k8s_client.ApiextensionsV1Api()
    for crd in CLICKHOUSE_CRDS:
        try:
            api.read_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 404:
                raise
            raise ObservabilityError(
                f"The cluster has no {crd}: Langfuse's ClickHouse is a ClickHouseCluster for the ClickHouse operator, "
                "which is not installed.",
                "Run notebook 01's operators step (it installs cert-manager and the ClickHouse operator, pinned), "
                "then re-run this cell.") from error


def install(t: Target, values_file: Path) -> list[str]:
    """With a cluster: create the Secrets (kept across runs), `helm upgrade --install` Langfuse, apply the Ingress."""
    if shutil.which("helm") is None:
        raise ObservabilityError("helm is not installed.", "Install helm v4 (https://helm.sh/docs/intro/install/; "
                                 "`make helm` puts one in .venvs/bin on x86_64 Linux), then re-run this cell.")
    lf = parameters()["langfuse"]
    t.cluster.require()
    require_clickhouse_operator()
    names = [lf["secret"], lf["valkey_secret"], lf["s3_secret"]]
    created = langfuse_secrets(_read_secrets(names, lf["namespace"]))
    namespace_obj = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": lf["namespace"], "labels": dict(manifests.COMMON_LABELS)}}
    t.apply([namespace_obj, *created, keys_secret(created[0], t.settings.namespace)])
    subprocess.run(helm_command(values_file), check=True)
    t.apply(render(t))
    return [*names, KEYS_SECRET]
