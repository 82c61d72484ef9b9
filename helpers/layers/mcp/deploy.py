"""The MCP servers on EKS: their image (build command, is it in ECR?), the optional Tavily Secret, a health check."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from helpers.infra import aws, manifests
from helpers.config import ROOT

if TYPE_CHECKING:
    from helpers.target import Target

CHAPTER = "07-mcp-tools"
DOCKERFILE = ROOT / "manifests" / CHAPTER / "image" / "Dockerfile"
PLATFORMS = "linux/amd64,linux/arm64"


def ecr_registry(account: str, region: str) -> str:
    """The ECR registry of an AWS account in a region."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


def image_reference(registry: str | None = None) -> str:
    """The servers' image as the manifests reference it (the chapter's registry unless one is given)."""
    image = manifests.chapter_parameters(CHAPTER)["image"]
    return f"{registry or image['registry']}/{image['repository']}:{image['tag']}"


def build_command(image: str) -> list[str]:
    """The multi-arch build-and-push command, run from the repository root (needs docker buildx and an ECR login)."""
    return ["docker", "buildx", "build", "--platform", PLATFORMS, "-f", str(DOCKERFILE.relative_to(ROOT)),
            "-t", image, "--push", "."]


def build_instructions(image: str, region: str) -> str:
    """The shell steps that create the ECR repository (with the workshop's tag), log in, build for amd64 and arm64,
    and push."""
    registry, _, rest = image.partition("/")
    repository = rest.rsplit(":", 1)[0]
    tags = " ".join(f"Key={key},Value={value}" for key, value in manifests.AWS_TAG.items())
    return "\n".join([
        f"aws ecr create-repository --repository-name {repository} --region {region} "
        "--image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true "
        "--encryption-configuration encryptionType=AES256 "
        f"--tags {tags}",
        f"aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry}",
        shlex.join(build_command(image)),
    ])


def image_pushed(image: str, region: str, ecr: Any = None) -> bool:
    """Whether the image tag exists in its ECR repository (False when the repository or tag does not)."""
    ecr = ecr or aws.client("ecr", region)
    _registry, _, rest = image.partition("/")
    repository, _, tag = rest.rpartition(":")
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        return True
    except (ecr.exceptions.RepositoryNotFoundException, ecr.exceptions.ImageNotFoundException):
        return False


def tavily_secret(namespace: str, api_key: str) -> dict[str, Any]:
    """The optional Secret holding the Tavily key: built in memory at apply time, never written to a file."""
    params = manifests.chapter_parameters(CHAPTER)["tavily_secret"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": params["name"], "namespace": namespace, "labels": dict(manifests.COMMON_LABELS)},
        "type": "Opaque",
        "stringData": {params["key"]: api_key},
    }


def render(t: Target, registry: str | None = None) -> list[manifests.Manifest]:
    """The chapter's objects for the target, pointing at the given registry's image."""
    return t.render(CHAPTER, overrides={"image": {"registry": registry}} if registry else None)


def health_in_cluster(service: str, namespace: str) -> dict[str, Any]:
    """GET /health of a server's Service through the API server's service proxy (no port-forward needed)."""
    from kubernetes import client

    port = manifests.chapter_parameters(CHAPTER)["port"]
    answer = client.CoreV1Api().connect_get_namespaced_service_proxy_with_path(
        f"{service}:{port}", namespace, "health", _preload_content=False)
    return json.loads(answer.data)


def delete_repository_command(region: str) -> str:
    """The command that deletes the servers' ECR repository and every image in it (run at teardown)."""
    repository = manifests.chapter_parameters(CHAPTER)["image"]["repository"]
    return f"aws ecr delete-repository --repository-name {repository} --region {region} --force"
