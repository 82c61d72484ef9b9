"""The RayService on the cluster (eks target): its image reference, the API-key Secret, its status, and calls
to the Serve app through the API server's service proxy (no port-forward, no public endpoint).

Every call that needs a cluster runs helpers.infra.k8s.cluster_reachable() first (ClusterUnreachable, with a fix).
"""

from __future__ import annotations

from typing import Any

from helpers.config import Settings, get_settings
from helpers.infra.k8s.client import ProxyAnswer, call_service
from helpers.infra.manifests import COMMON_LABELS, chapter_parameters

CHAPTER = "03-ray-serve"


def parameters() -> dict[str, Any]:
    """manifests/03-ray-serve/parameters.yaml."""
    return chapter_parameters(CHAPTER)


def ecr_registry(account: str, region: str) -> str:
    """The ECR registry of an account in a region (where the chapter's image is pushed)."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


def image_reference(registry: str | None = None) -> str:
    """The full image reference the RayService pods run (registry defaults to the parameters' placeholder)."""
    image = parameters()["image"]
    return f"{registry or image['registry']}/{image['repository']}:{image['tag']}"


def build_command(registry: str | None = None) -> str:
    """The command that builds and pushes the chapter's image (run it from the repository root)."""
    settings = get_settings()
    return (
        "docker buildx build --platform linux/arm64 -f manifests/03-ray-serve/image/Dockerfile "
        f"--build-context models={settings.models_dir} -t {image_reference(registry)} --push ."
    )


def api_key_secret(settings: Settings | None = None) -> dict[str, Any]:
    """The Secret the Ray pods read the app's bearer key from, built in memory at apply time (never written)."""
    settings = settings or get_settings()
    if settings.serve_api_key is None:
        raise RuntimeError("settings.serve_api_key is not set: run helpers.config.ensure_secrets() first.")
    ref = parameters()["api_key_secret"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": ref["name"], "namespace": settings.namespace, "labels": dict(COMMON_LABELS)},
        "stringData": {ref["key"]: settings.serve_api_key.get_secret_value()},
    }


def image_in_ecr(registry: str, region: str | None = None) -> bool:
    """True when the chapter's image tag exists in the account's ECR repository."""
    from helpers.infra import aws

    image = parameters()["image"]
    ecr = aws.client("ecr", region)
    try:
        ecr.describe_images(repositoryName=image["repository"], imageIds=[{"imageTag": image["tag"]}])
        return True
    except ecr.exceptions.ImageNotFoundException:
        return False
    except ecr.exceptions.RepositoryNotFoundException:
        return False


def service_status(settings: Settings | None = None) -> dict[str, Any]:
    """The RayService's readiness, Serve application status and replica counts, as KubeRay reports them."""
    from helpers.infra.k8s import condition_status, get_object

    settings = settings or get_settings()
    obj = get_object("ray.io/v1", "RayService", parameters()["name"], settings.namespace) or {}
    status = obj.get("status") or {}
    apps = ((status.get("activeServiceStatus") or {}).get("applicationStatuses")) or {}
    app = apps.get(parameters()["app_name"]) or {}
    return {
        "exists": bool(obj),
        "ready": condition_status(obj, "Ready"),
        "service_status": status.get("serviceStatus"),
        "app_status": app.get("status"),
        "deployments": {name: d.get("status") for name, d in (app.get("serveDeploymentStatuses") or {}).items()},
    }


def call_app(path: str, body: dict[str, Any] | None = None, settings: Settings | None = None,
             timeout: float = 120) -> ProxyAnswer:
    """GET (or POST JSON to) the Serve app through the API server proxy, with the app's key in X-Api-Key."""
    settings = settings or get_settings()
    headers = {}
    if settings.serve_api_key is not None:
        headers["X-Api-Key"] = settings.serve_api_key.get_secret_value()  # Authorization is the cluster's
    return call_service(f"{parameters()['name']}-serve-svc", settings.namespace, path, body=body, port=8000,
                        headers=headers, timeout=timeout)
