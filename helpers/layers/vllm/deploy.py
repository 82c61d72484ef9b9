"""vLLM on the cluster (eks target): the HF token Secret from the environment, calls through the API server's
service proxy (no port-forward, no public endpoint), and the KV-cache figures of a server's log.

Every call that needs a cluster runs helpers.infra.k8s.cluster_reachable() first (ClusterUnreachable, with a fix).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from helpers.config import mask
from helpers.infra.manifests import COMMON_LABELS, chapter_parameters

CHAPTER = "02-vllm"
HF_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def server_parameters(server: str) -> dict[str, Any]:
    """One server's entry of manifests/02-vllm/parameters.yaml (name, model, served name, sizes)."""
    servers = chapter_parameters(CHAPTER)["servers"]
    if server not in servers:
        raise ValueError(f"No server {server!r} in manifests/{CHAPTER}/parameters.yaml; known: {', '.join(servers)}")
    return dict(servers[server])


def hf_token_from_environment() -> str | None:
    """The Hugging Face token from HF_TOKEN (or HUGGING_FACE_HUB_TOKEN), or None when neither is set."""
    for name in HF_TOKEN_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def hf_token_secret(namespace: str) -> dict[str, Any] | None:
    """The Secret the vLLM pods read HF_TOKEN from, built from the environment (None when no token is set).

    Built in memory at apply time and sent straight to the API server: it is never written to a file, never
    part of the rendered manifests, and never printed (see describe_secret)."""
    token = hf_token_from_environment()
    if not token:
        return None
    ref = chapter_parameters(CHAPTER)["hf_token_secret"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ref["name"], "namespace": namespace,
                     "labels": {**COMMON_LABELS, "app.kubernetes.io/component": "vllm"}},
        "type": "Opaque",
        "stringData": {ref["key"]: token},
    }


def describe_secret(secret: dict[str, Any] | None) -> str:
    """A one-line description of the token Secret that shows it is set without revealing it."""
    if secret is None:
        return ("HF_TOKEN is not set: no Secret created. The Qwen models are public, so the pods download "
                "anonymously (rate-limited). To use a token: export HF_TOKEN=hf_... before starting Jupyter.")
    (key, value), = secret["stringData"].items()
    return f"Secret {secret['metadata']['name']} (key {key}): {mask(value)}"


@dataclass(frozen=True)
class ProxyAnswer:
    """The answer of a call through the API server's service proxy."""

    status: int
    body: Any


def call_service(name: str, namespace: str, path: str, body: dict[str, Any] | None = None, port: int | str = 8000,
                 timeout: float = 300) -> ProxyAnswer:
    """GET (or POST a JSON body to) a Service through the API server proxy: your kubeconfig's credentials, no tunnel."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from helpers.infra.k8s import cluster_reachable

    cluster_reachable()
    api = client.ApiClient()
    method = "POST" if body is not None else "GET"
    resource = f"/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy/{path.lstrip('/')}"
    method, url, headers, payload, post_params = api.param_serialize(
        method=method, resource_path=resource, auth_settings=["BearerToken"], body=body,
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
    )  # fmt: skip
    try:
        response = api.call_api(method, url, header_params=headers, body=payload, post_params=post_params,
                                _request_timeout=timeout)
        status, raw = response.status, response.read().decode("utf-8", errors="replace")
    except ApiException as error:  # no answer at all (connection refused, timeout)
        status, raw = error.status, str(error.body or error.reason)
    try:
        return ProxyAnswer(status, json.loads(raw) if raw else None)
    except json.JSONDecodeError:
        return ProxyAnswer(status, raw)


def server_log(server: str, namespace: str, limit_bytes: int = 5_000_000) -> str:
    """The log of a server's running pod from its start (the KV-cache lines come early), or '' when none runs."""
    from kubernetes import client

    from helpers.infra.k8s import cluster_reachable

    cluster_reachable()
    name = server_parameters(server)["name"]
    core = client.CoreV1Api()
    pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={name}").items
    running = [p for p in pods if p.status.phase == "Running"]
    if not running:
        return ""
    return core.read_namespaced_pod_log(running[0].metadata.name, namespace, container="vllm", limit_bytes=limit_bytes)


def server_instance_type(server: str, namespace: str) -> str | None:
    """The EC2 instance type of the node a server's running pod is on (from the node's label), or None."""
    from kubernetes import client

    from helpers.infra.k8s import cluster_reachable

    cluster_reachable()
    name = server_parameters(server)["name"]
    core = client.CoreV1Api()
    pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={name}").items
    nodes = [p.spec.node_name for p in pods if p.status.phase == "Running" and p.spec.node_name]
    if not nodes:
        return None
    return (core.read_node(nodes[0]).metadata.labels or {}).get("node.kubernetes.io/instance-type")
