"""vLLM on the cluster (eks target): the HF token and API key Secrets, a port-forward to a server for a with-block
(its NetworkPolicy admits only the gateway's pods and Prometheus, and the API server's proxy would drop the
`Authorization` header vLLM needs), and the KV-cache figures of a server's log.

Every call that needs a cluster runs helpers.infra.k8s.cluster_reachable() first (ClusterUnreachable, with a fix).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from helpers.config import Settings, mask
from helpers.errors import WorkshopError
from helpers.infra.k8s import client as k8s_client
from helpers.infra.k8s import port_forward as forwarding
from helpers.infra.k8s.client import ProxyAnswer
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
    return vllm_secret("hf_token_secret", namespace, token)


def api_key_secret(namespace: str, settings: Settings) -> dict[str, Any]:
    """The Secret vLLM reads its API key from (VLLM_API_KEY = --api-key), built in memory at apply time.

    Its value is settings.model_server_api_key: the same key chapter 04's gateway holds as MODEL_SERVER_API_KEY
    and sends to vLLM, so the gateway is let in and a pod without the key is not."""
    if settings.model_server_api_key is None:
        raise WorkshopError("No model server API key (WORKSHOP_MODEL_SERVER_API_KEY): vLLM cannot get --api-key.",
                            "Run `python -m helpers.local.doctor` to generate the workshop secrets.")
    return vllm_secret("api_key_secret", namespace, settings.model_server_api_key.get_secret_value())


def vllm_secret(parameter: str, namespace: str, value: str) -> dict[str, Any]:
    """A Secret the vLLM pods read, named and keyed by chapter 02's `parameter` entry, holding `value`."""
    ref = chapter_parameters(CHAPTER)[parameter]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ref["name"], "namespace": namespace,
                     "labels": {**COMMON_LABELS, "app.kubernetes.io/component": "vllm"}},
        "type": "Opaque",
        "stringData": {ref["key"]: value},
    }


def port_forward_command(server: str, namespace: str, local_port: int = 18000) -> str:
    """The kubectl command that makes a server reachable on this machine, past its NetworkPolicy (port-forward enters
    the pod itself). Its /v1 routes then need `Authorization: Bearer <model server key>` (t.chat.key())."""
    name = server_parameters(server)["name"]
    return f"kubectl -n {namespace} port-forward svc/{name} {local_port}:8000"


SERVER_PORT = 8000  # vLLM's port in the pod and in its Service


@contextmanager
def port_forward(server: str, namespace: str, local_port: int | None = None) -> Iterator[str]:
    """A port-forward to a server's Service for the length of a with-block; yields its base URL on this machine
    (http://127.0.0.1:PORT, add /v1). Its /v1 routes want `Authorization: Bearer <model server key>` (t.chat.key())."""
    with forwarding.port_forward(server_parameters(server)["name"], SERVER_PORT, namespace, local_port) as base:
        yield base


def describe_secret(secret: dict[str, Any] | None) -> str:
    """A one-line description of the token Secret that shows it is set without revealing it."""
    if secret is None:
        return ("HF_TOKEN is not set: no Secret created. The Qwen models are public, so the pods download "
                "anonymously (rate-limited). To use a token: export HF_TOKEN=hf_... before starting Jupyter.")
    (key, value), = secret["stringData"].items()
    return f"Secret {secret['metadata']['name']} (key {key}): {mask(value)}"


def call_service(name: str, namespace: str, path: str, body: dict[str, Any] | None = None, port: int | str = 8000,
                 timeout: float = 300) -> ProxyAnswer:
    """GET (or POST a JSON body to) a Service through the API server proxy: your kubeconfig's credentials, no tunnel.

    Not for vLLM's /v1 routes since chapter 02's NetworkPolicy and --api-key: use port_forward."""
    return k8s_client.call_service(name, namespace, path, body=body, port=port, timeout=timeout)


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
