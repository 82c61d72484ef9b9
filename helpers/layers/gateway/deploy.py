"""Chapter 04 on EKS: the gateway's Kubernetes objects, its Secrets (generated at apply time), the agent's virtual key."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from helpers.config import Settings
from helpers.infra import manifests
from helpers.layers.gateway.config import CHAPTER, tracing_context

if TYPE_CHECKING:
    from helpers.target import Target


def _secret_value(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


SECRET_NAME = "litellm-secrets"
POSTGRES_SECRET_NAME = "litellm-postgres"


def render(t: Target, overrides: dict[str, Any] | None = None, include_on_demand: bool = False,
           tracing: bool | None = None) -> list[manifests.Manifest]:
    """The chapter's Kubernetes objects for the target (the ConfigMap holds gateway_config(t, tracing))."""
    context = {"tracing": tracing_context(t, tracing)}
    return t.render(CHAPTER, overrides=manifests.deep_merge(context, overrides or {}),
                    include_on_demand=include_on_demand)


def secret_objects(namespace: str, settings: Settings, existing: dict[str, dict[str, str]] | None = None
                   ) -> list[dict[str, Any]]:
    """The Secrets the gateway needs, with values generated now (or kept from `existing`); never written to disk."""
    existing = existing or {}
    pg = existing.get(POSTGRES_SECRET_NAME) or {"POSTGRES_USER": "litellm", "POSTGRES_DB": "litellm",
                                                  "POSTGRES_PASSWORD": secrets.token_urlsafe(24)}
    old = existing.get(SECRET_NAME) or {}
    postgres = manifests.chapter_parameters(CHAPTER)["postgres"]["name"]
    values = {
        "LITELLM_MASTER_KEY": _secret_value(settings.gateway_master_key),
        "LITELLM_SALT_KEY": old.get("LITELLM_SALT_KEY") or "sk-salt-" + secrets.token_urlsafe(24),
        "REDIS_PASSWORD": old.get("REDIS_PASSWORD") or secrets.token_urlsafe(24),
        "DATABASE_URL": f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@{postgres}.{namespace}.svc"
                        f":5432/{pg['POSTGRES_DB']}",
        "MODEL_SERVER_API_KEY": _secret_value(settings.model_server_api_key),  # vLLM's --api-key (chapter 02)
        "EMBEDDING_API_KEY": _secret_value(settings.serve_api_key),  # the Ray Serve app's bearer key (chapter 03)
    }
    labels = dict(manifests.COMMON_LABELS)
    return [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": POSTGRES_SECRET_NAME, "namespace": namespace, "labels": labels}, "stringData": pg},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": labels}, "stringData": values},
    ]


def create_secrets(t: Target) -> list[str]:
    """Create or update the gateway's Secrets in the cluster (generated passwords kept across runs); return their names."""
    import base64

    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException

    t.cluster.require()
    namespace = t.settings.namespace
    core = k8s_client.CoreV1Api()
    existing: dict[str, dict[str, str]] = {}
    for name in (POSTGRES_SECRET_NAME, SECRET_NAME):
        try:
            data = core.read_namespaced_secret(name, namespace).data or {}
            existing[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        except ApiException as error:
            if error.status != 404:
                raise
    objects = secret_objects(namespace, t.settings, existing)
    t.apply(objects)
    return [o["metadata"]["name"] for o in objects]


def agent_key_request(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of POST /key/generate for the agent's virtual key: its models, budget and rate limits."""
    p = params or manifests.chapter_parameters(CHAPTER)["agent_key"]
    return {"key_alias": p["alias"], "models": list(p["models"]), "max_budget": p["max_budget"],
            "budget_duration": p["budget_duration"], "rpm_limit": p["rpm_limit"], "tpm_limit": p["tpm_limit"],
            "metadata": {"created_by": "llm-eks-workshop", "for": "chapter 08 supervisor agent"}}
