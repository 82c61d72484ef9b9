"""The supervisor agent on EKS: its manifests, image (build script, is it in ECR?), key Secret and a health check."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from helpers.infra import manifests
from helpers.config import ROOT, Settings

if TYPE_CHECKING:
    from helpers.target import Target

CHAPTER = "08-supervisor-agent"
BUILD_SCRIPT = ROOT / "manifests" / CHAPTER / "image" / "build.sh"
DOCKERFILE = ROOT / "manifests" / CHAPTER / "image" / "Dockerfile"


def image_reference(registry: str | None = None) -> str:
    """The agent's image as the manifests reference it (the chapter's registry unless one is given)."""
    image = manifests.chapter_parameters(CHAPTER)["image"]
    return f"{registry or image['registry']}/{image['repository']}:{image['tag']}"


def build_instructions(registry: str, region: str) -> str:
    """The shell steps that create the ECR repository (with the workshop's tag), log in, and build + push for amd64
    and arm64. Notebook 10's teardown and its AWS check find the repository by its name prefix, llm-eks-workshop/."""
    repository = manifests.chapter_parameters(CHAPTER)["image"]["repository"]
    tags = " ".join(f"Key={key},Value={value}" for key, value in manifests.AWS_TAG.items())
    return "\n".join([
        f"aws ecr create-repository --repository-name {repository} --region {region} "
        "--image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true "
        "--encryption-configuration encryptionType=AES256 "
        f"--tags {tags}",
        f"aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry}",
        f"{BUILD_SCRIPT.relative_to(ROOT)} {registry}",
    ])


def render(t: Target, registry: str | None = None, opensearch_endpoint: str | None = None
           ) -> list[manifests.Manifest]:
    """The chapter's objects (ServiceAccount, Deployment, Service, Ingress, PodDisruptionBudget).

    On eks the agent's vector store is chapter 06's OpenSearch domain: its endpoint is `opensearch_endpoint`, else
    WORKSHOP_OPENSEARCH_ENDPOINT, else the stack's outputs (t.opensearch_endpoint()); without one this raises the
    reason (no AWS account, no stack yet) with the fix, instead of rendering an agent that searches nothing."""
    overrides: dict[str, Any] = {}
    if registry:
        overrides["image"] = {"registry": registry}
    if t.is_eks and not opensearch_endpoint:
        opensearch_endpoint = t.opensearch_endpoint()
    if opensearch_endpoint:
        overrides["opensearch_endpoint"] = opensearch_endpoint
    return t.render(CHAPTER, overrides=overrides or None)


def keys_secret(namespace: str, settings: Settings) -> dict[str, Any]:
    """The Secret with the callers' bearer key: built in memory at apply time, never written to a file.

    The agent's own gateway key is chapter 04's virtual key (Secret agent-gateway-key), not this one."""
    if settings.agent_api_key is None:
        raise RuntimeError("No agent API key: run `python -m helpers.local.doctor` to generate the workshop secrets.")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": manifests.chapter_parameters(CHAPTER)["secrets"]["name"], "namespace": namespace,
                     "labels": dict(manifests.COMMON_LABELS)},
        "type": "Opaque",
        "stringData": {"WORKSHOP_AGENT_API_KEY": settings.agent_api_key.get_secret_value()},
    }


def health_in_cluster(namespace: str) -> dict[str, Any]:
    """GET /health of the agent's Service through the API server's service proxy (no port-forward needed)."""
    from kubernetes import client

    params = manifests.chapter_parameters(CHAPTER)["agent"]
    answer = client.CoreV1Api().connect_get_namespaced_service_proxy_with_path(
        f"{params['name']}:{params['port']}", namespace, "health", _preload_content=False)
    return json.loads(answer.data)


def port_forward_command(namespace: str, local_port: int = 18090) -> str:
    """The kubectl command that makes the in-cluster agent reachable on this machine (the API proxy drops the key)."""
    params = manifests.chapter_parameters(CHAPTER)["agent"]
    return f"kubectl -n {namespace} port-forward svc/{params['name']} {local_port}:{params['port']}"
