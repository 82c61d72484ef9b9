"""Every kubernetes-client call the helpers make, through the pinned client's real ApiClient, against a loopback
server that answers like the Kubernetes API server (issue 12, defect 8 and its check).

Nothing in the kubernetes package is mocked: the kubeconfig points at `FakeApiServer` (127.0.0.1, a free port), so
each helper's call goes through the generated API classes, the DynamicClient's discovery, `param_serialize` and
`call_api`, urllib3, and real HTTP. A call with a signature the pinned client does not accept fails with its
TypeError or ValidationError; a call to a wrong path gets the 404 a real API server would send; the test asserts the
requests the server recorded (method, path and query, content type, the kubeconfig's bearer token, the body).

The server knows the resources the workshop's objects use (DISCOVERY), stores objects in memory (server-side apply
creates or updates them), filters lists by label and field selectors, serves pod logs, and answers the service proxy
(/api/v1/namespaces/N/services/S:P/proxy/...) with an echo of what reached the Service.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from pydantic import SecretStr

from helpers.config import Settings
from helpers.infra import k8s, teardown
from helpers.target import Target

TOKEN = "test-token"
NS = "llm-workshop"

# (group, version, kind, plural, namespaced): what discovery lists (group "" is the core group under /api)
DISCOVERY: tuple[tuple[str, str, str, str, bool], ...] = (
    ("", "v1", "Namespace", "namespaces", False),
    ("", "v1", "Node", "nodes", False),
    ("", "v1", "Pod", "pods", True),
    ("", "v1", "Service", "services", True),
    ("", "v1", "Secret", "secrets", True),
    ("", "v1", "ConfigMap", "configmaps", True),
    ("", "v1", "ServiceAccount", "serviceaccounts", True),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    ("", "v1", "Event", "events", True),
    ("apps", "v1", "Deployment", "deployments", True),
    ("apps", "v1", "StatefulSet", "statefulsets", True),
    ("batch", "v1", "Job", "jobs", True),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", False),
    ("ray.io", "v1", "RayService", "rayservices", True),
    ("karpenter.sh", "v1", "NodePool", "nodepools", False),
    ("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", True),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False),
)
PROXY_PREFIX = "/api/v1/namespaces/{ns}/services/{svc}/proxy"


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str  # path and query, as sent
    headers: dict[str, str]
    body: Any
    code: int = 0  # what the server answered

    @property
    def route(self) -> str:
        return unquote(urlsplit(self.path).path)  # the API server decodes the path (svc%3A8000 -> svc:8000)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass
class FakeApiServer:
    """A loopback HTTP server that answers like the Kubernetes API server for the paths the helpers use."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # object path -> object
    requests: list[Recorded] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # pod path -> log text
    url: str = ""
    version: int = 0

    # ------------------------------------------------------------ paths

    @staticmethod
    def resource(api_version: str, kind: str) -> tuple[str, str, str, str, bool]:
        group, _, version = api_version.rpartition("/")
        return next(r for r in DISCOVERY if (r[0], r[1], r[2]) == (group, version, kind))

    def path_of(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> str:
        group, version, _, plural, namespaced = self.resource(api_version, kind)
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        return f"{base}/namespaces/{namespace}/{plural}/{name}" if namespaced else f"{base}/{plural}/{name}"

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Put an object on the 'cluster' (as if someone had created it)."""
        meta = obj["metadata"]
        self.version += 1
        meta.setdefault("resourceVersion", str(self.version))
        meta.setdefault("uid", f"uid-{self.version}")
        meta.setdefault("creationTimestamp", "2026-06-01T00:00:00Z")
        self.objects[self.path_of(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))] = obj
        return obj

    def calls(self, method: str, route_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.route.startswith(route_prefix)]

    # ------------------------------------------------------------ answers

    def discovery(self, route: str) -> dict[str, Any] | None:
        if route.rstrip("/") == "/version":
            return {"major": "1", "minor": "36", "gitVersion": "v1.36.0", "gitCommit": "x", "gitTreeState": "clean",
                    "buildDate": "2026-06-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc",
                    "platform": "linux/amd64"}
        if route == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if route == "/apis":
            groups = sorted({(g, v) for g, v, *_ in DISCOVERY if g})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups]}
        parts = route.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" and len(parts) == 2 else (
            (parts[1], parts[2]) if parts[0] == "apis" and len(parts) == 3 else (None, None))
        if version is None:
            return None
        found = [r for r in DISCOVERY if r[0] == group and r[1] == version]
        if not found:
            return None
        resources = [{"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                      "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                     for _, _, kind, plural, namespaced in found]
        resources += [{"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
                      ] if not group else []
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
                "resources": resources}

    @staticmethod
    def parse(route: str) -> tuple[tuple[str, str, str, str, bool], str | None, str | None, list[str]] | None:
        """(resource, namespace, name, subresource parts) of an object or collection path."""
        parts = [unquote(p) for p in route.strip("/").split("/")]
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None
        match = [r for r in DISCOVERY if r[0] == group and r[1] == version and r[3] == rest[0]]
        if not match:
            return None
        return match[0], namespace, (rest[1] if len(rest) > 1 else None), rest[2:]

    @staticmethod
    def selected(obj: dict[str, Any], query: dict[str, list[str]]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for term in filter(None, (query.get("labelSelector") or [""])[0].split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        for term in filter(None, (query.get("fieldSelector") or [""])[0].split(",")):
            dotted, _, value = term.partition("=")
            current: Any = obj
            for key in dotted.split("."):
                current = (current or {}).get(key) if isinstance(current, dict) else None
            if current != value:
                return False
        return True

    def answer(self, request: Recorded) -> tuple[int, Any, str]:
        route = request.route
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, status(401, "Unauthorized"), "application/json"
        if "/proxy/" in route and "/services/" in route:  # the service proxy: what reached the Service
            if route.endswith("/proxy/fail"):
                return 503, {"error": "upstream says no"}, "application/json"
            return 200, {"method": request.method, "path": route.split("/proxy", 1)[1],
                         "x_api_key": request.headers.get("x-api-key"), "body": request.body}, "application/json"
        if request.method == "GET" and (found := self.discovery(route)) is not None:
            return 200, found, "application/json"
        parsed = self.parse(route)
        if parsed is None:
            return 404, status(404, f"the server could not find the requested resource ({route})"), "application/json"
        (group, version, kind, plural, namespaced), namespace, name, sub = parsed
        if name is None:  # a collection
            if request.method != "GET":
                return 405, status(405, "MethodNotAllowed"), "application/json"
            items = [o for p, o in sorted(self.objects.items()) if f"/{plural}/" in p and o["kind"] == kind
                     and (namespace is None or o["metadata"].get("namespace") == namespace)
                     and self.selected(o, request.query)]
            return 200, {"kind": f"{kind}List", "apiVersion": f"{group}/{version}".lstrip("/"),
                         "metadata": {"resourceVersion": str(self.version)}, "items": items}, "application/json"
        key = route.split("/log")[0] if sub == ["log"] else route
        if sub == ["log"]:
            if key not in self.logs:
                return 404, status(404, "no log"), "application/json"
            return 200, self.logs[key], "text/plain"
        if request.method == "GET":
            if key in self.objects:
                return 200, self.objects[key], "application/json"
            return 404, status(404, f'{plural} "{name}" not found'), "application/json"
        if request.method == "PATCH":
            if request.headers.get("content-type") != "application/apply-patch+yaml":
                return 415, status(415, "only server-side apply is served here"), "application/json"
            if request.query.get("fieldManager") != ["llm-eks-workshop"]:
                return 422, status(422, "fieldManager is required for apply patch"), "application/json"
            applied = request.body
            old = self.objects.get(key)
            if old is not None and all(old.get(k) == v for k, v in applied.items() if k != "metadata") \
                    and all(old["metadata"].get(k) == v for k, v in applied["metadata"].items()):
                return 200, old, "application/json"  # nothing changed: same resourceVersion
            applied = json.loads(json.dumps(applied))
            applied["metadata"].pop("resourceVersion", None)
            self.objects.pop(key, None)
            return 200, self.add(applied), "application/json"
        if request.method == "DELETE":
            if key not in self.objects:
                return 404, status(404, f'{plural} "{name}" not found'), "application/json"
            return 200, self.objects.pop(key), "application/json"
        return 405, status(405, "MethodNotAllowed"), "application/json"


def status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}.get(code, "Invalid"),
            "code": code}


@pytest.fixture
def api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    """The fake API server, a kubeconfig pointing at it, and the DynamicClient's discovery cache in tmp_path."""
    fake = FakeApiServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            ctype = self.headers.get("content-type") or ""
            body: Any = None
            if raw:
                body = yaml.safe_load(raw) if "yaml" in ctype or "json" in ctype else raw.decode()
            request = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                fake.requests.append(request)
                code, answer, answer_type = fake.answer(request)
                request.code = code
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", answer_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "users": [{"name": "me", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": NS}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the DynamicClient caches discovery in gettempdir()
    k8s.cluster_reachable()  # what t.cluster.require() does before a notebook's cluster cell: load this kubeconfig
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace=NS,
                    serve_api_key=SecretStr("sk-serve-test"), gateway_master_key=SecretStr("sk-workshop-test"),
                    agent_api_key=SecretStr("sk-agent-test"))


def labelled(obj: dict[str, Any]) -> dict[str, Any]:
    from helpers.infra.manifests import COMMON_LABELS

    obj["metadata"].setdefault("labels", {}).update(COMMON_LABELS)
    return obj


def pod(name: str, labels: dict[str, str], phase: str = "Running", node: str = "node-1", ready: bool = True,
        container: str = "main") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": container, "image": "x"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


# ---------------------------------------------------------------- calls to Services through the API server's proxy


def test_ray_call_app_goes_through_the_proxy_with_the_apps_key(api_server: FakeApiServer) -> None:
    """Fails with the pre-kubernetes-37 `call_api(resource, method, auth_settings=...)` of layers/ray/deploy.py."""
    from helpers.layers.ray import deploy as ray_deploy

    health = ray_deploy.call_app("/health", settings=SETTINGS)
    answer = ray_deploy.call_app("/v1/embeddings", {"model": "embedding", "input": ["a"]}, settings=SETTINGS)
    keyless = ray_deploy.call_app("/v1/models", settings=SETTINGS.model_copy(update={"serve_api_key": None}))

    proxy = PROXY_PREFIX.format(ns=NS, svc=f"{ray_deploy.parameters()['name']}-serve-svc:8000")
    assert (health.status, health.body["method"], health.body["path"]) == (200, "GET", "/health")
    assert answer.status == 200 and answer.body["body"] == {"model": "embedding", "input": ["a"]}
    assert answer.body["x_api_key"] == "sk-serve-test" and keyless.body["x_api_key"] is None
    post = api_server.calls("POST", proxy)[0]
    assert post.route == f"{proxy}/v1/embeddings"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["authorization"] == f"Bearer {TOKEN}"  # the kubeconfig's credentials, not the app's key


def test_vllm_call_service_returns_non_2xx_and_refuses_nothing(api_server: FakeApiServer) -> None:
    from helpers.layers.vllm import deploy as vllm_deploy

    models = vllm_deploy.call_service("vllm-reasoning", NS, "/v1/models")
    chat = vllm_deploy.call_service("vllm-reasoning", NS, "v1/chat/completions", body={"model": "reasoning"})
    failed = vllm_deploy.call_service("vllm-reasoning", NS, "/fail")
    assert models.body["path"] == "/v1/models" and chat.body["body"] == {"model": "reasoning"}
    assert (failed.status, failed.body) == (503, {"error": "upstream says no"})  # returned, not raised
    assert [r.route for r in api_server.calls("POST")] == [
        PROXY_PREFIX.format(ns=NS, svc="vllm-reasoning:8000") + "/v1/chat/completions"]


def test_one_proxy_helper_for_every_layer() -> None:
    """ray and vllm share helpers.infra.k8s.client.call_service (one copy of the kubernetes-37 call)."""
    import inspect

    from helpers.infra.k8s import client as k8s_client
    from helpers.layers.ray import deploy as ray_deploy
    from helpers.layers.vllm import deploy as vllm_deploy

    for module in (ray_deploy, vllm_deploy):
        source = inspect.getsource(module)
        assert "call_api" not in source and "param_serialize" not in source, module.__name__
        assert module.ProxyAnswer is k8s_client.ProxyAnswer


def test_a_vanished_api_server_is_clusterunreachable(api_server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    from helpers.infra.k8s import client as k8s_client

    info = k8s.cluster_reachable()
    monkeypatch.setattr(k8s_client, "cluster_reachable", lambda: info)
    kubeconfig = Path(os.environ["KUBECONFIG"])
    from tests.conftest import free_port

    kubeconfig.write_text(kubeconfig.read_text().replace(api_server.url, f"http://127.0.0.1:{free_port()}"))
    from kubernetes import config

    config.load_kube_config(config_file=str(kubeconfig))
    with pytest.raises(k8s.ClusterUnreachable, match="stopped answering"):
        k8s_client.call_service("vllm-reasoning", NS, "/health", timeout=2)


def test_agent_and_mcp_health_in_the_cluster(api_server: FakeApiServer) -> None:
    from helpers.layers.agent import deploy as agent_deploy
    from helpers.layers.mcp import deploy as mcp_deploy

    assert agent_deploy.health_in_cluster(NS)["path"] == "/health"
    assert mcp_deploy.health_in_cluster("mcp-web-search", NS)["path"] == "/health"
    assert {r.route.split("/services/")[1] for r in api_server.calls("GET", f"/api/v1/namespaces/{NS}/services/")} \
        == {"supervisor-agent:8000/proxy/health", "mcp-web-search:8000/proxy/health"}


# ---------------------------------------------------------------- apply, reads, waits, logs, events


def test_apply_is_server_side_apply_and_reports_unchanged(api_server: FakeApiServer) -> None:
    secret = labelled({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NS},
                       "stringData": {"k": "v"}})
    first = k8s.apply([secret])
    again = k8s.apply([secret])
    dry = k8s.apply([secret], dry_run=True)
    assert [a.result for a in first + again] == ["applied", "unchanged"] and dry[0].result == "dry-run"
    patch = api_server.calls("PATCH")[0]
    assert patch.route == f"/api/v1/namespaces/{NS}/secrets/s"
    assert patch.query["fieldManager"] == ["llm-eks-workshop"] and patch.query["force"] == ["true"]
    assert api_server.calls("PATCH")[-1].query["dryRun"] == ["All"]
    with pytest.raises(ValueError, match="lacks the label"):
        k8s.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": NS}}])


def test_gateway_secrets_read_what_exists_and_apply_the_rest(api_server: FakeApiServer) -> None:
    import base64

    from helpers.layers import gateway

    t = Target("eks", SETTINGS)
    names = gateway.create_secrets(t)  # none exists yet: 404 reads, then apply
    kept = {k: base64.b64encode(v.encode()).decode()
            for k, v in api_server.objects[f"/api/v1/namespaces/{NS}/secrets/{names[0]}"]["stringData"].items()}
    api_server.objects[f"/api/v1/namespaces/{NS}/secrets/{names[0]}"]["data"] = kept
    again = gateway.create_secrets(t)  # now the reads find them (base64 data), and the passwords are kept
    assert names == again
    reads = [r.route for r in api_server.calls("GET", f"/api/v1/namespaces/{NS}/secrets/")]
    assert reads[:2] == [f"/api/v1/namespaces/{NS}/secrets/{n}" for n in names]
    first = api_server.calls("PATCH", f"/api/v1/namespaces/{NS}/secrets/{names[0]}")
    assert first[0].body["stringData"] == first[-1].body["stringData"]


def test_status_waits_events_and_logs(api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers.layers.ray import deploy as ray_deploy
    from helpers.layers.vllm import deploy as vllm_deploy

    name = ray_deploy.parameters()["name"]
    app = ray_deploy.parameters()["app_name"]
    applications = {app: {"status": "RUNNING", "serveDeploymentStatuses": {"Embedder": {"status": "HEALTHY"}}}}
    api_server.add({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name, "namespace": NS},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}], "serviceStatus": "Running",
                               "activeServiceStatus": {"applicationStatuses": applications}}})
    api_server.add({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "litellm", "namespace": NS,
                                                                                "generation": 2},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "litellm"}},
                             "template": {"metadata": {"labels": {"app": "litellm"}},
                                          "spec": {"containers": [{"name": "litellm", "image": "x"}]}}},
                    "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}})
    api_server.add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {
        "karpenter.sh/nodepool": "gpu", "node.kubernetes.io/instance-type": "g6.12xlarge"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    api_server.add(pod("vllm-reasoning-0", {"app.kubernetes.io/name": "vllm-reasoning"}, container="vllm"))
    api_server.add(pod("stuck-0", {"app": "stuck"}, phase="Pending", node="", ready=False))
    api_server.add(pod("job-pod", {"job-name": "agent-key"}))
    api_server.logs[f"/api/v1/namespaces/{NS}/pods/vllm-reasoning-0"] = "INFO GPU KV cache size: 1,000 tokens\n"
    api_server.logs[f"/api/v1/namespaces/{NS}/pods/job-pod"] = "created key\n"
    api_server.add({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "stuck-0.1", "namespace": NS},
                    "involvedObject": {"kind": "Pod", "name": "stuck-0", "namespace": NS}, "type": "Warning",
                    "reason": "FailedScheduling", "source": {"component": "default-scheduler"},
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    "lastTimestamp": "2026-06-01T00:00:00Z", "count": 3})

    status_ = ray_deploy.service_status(SETTINGS)
    assert status_ == {"exists": True, "ready": "True", "service_status": "Running", "app_status": "RUNNING",
                       "deployments": {"Embedder": "HEALTHY"}}
    assert k8s.wait_for_condition("ray.io/v1", "RayService", name, namespace=NS, timeout=5, poll=0.1)["kind"] \
        == "RayService"
    k8s.wait_for_rollout("litellm", NS, timeout=5, poll=0.1)
    assert k8s.wait_for_nodes("gpu", timeout=5, poll=0.1) == ["node-1"]
    assert "GPU KV cache size" in vllm_deploy.server_log("reasoning", NS)
    assert vllm_deploy.server_instance_type("reasoning", NS) == "g6.12xlarge"
    assert k8s.job_logs("agent-key", NS) == "created key\n"
    assert k8s.pod_logs("nothing", NS) == ""  # a 404 is "no log yet"
    events = k8s.events_for("stuck-0", NS, "Pod")
    assert [e["reason"] for e in events] == ["FailedScheduling"] and k8s.events_for("stuck-0")  # all namespaces
    diagnosis = k8s.diagnose_pending(NS)
    assert list(diagnosis) == ["stuck-0"] and diagnosis["stuck-0"]
    k8s.report_pods(NS, "app=stuck")
    assert "FailedScheduling" in capsys.readouterr().out
    routes = {r.route for r in api_server.requests}
    assert {"/api/v1/events", f"/api/v1/namespaces/{NS}/events", f"/api/v1/namespaces/{NS}/pods/job-pod/log",
            f"/apis/apps/v1/namespaces/{NS}/deployments/litellm", "/api/v1/nodes", "/api/v1/nodes/node-1",
            f"/apis/ray.io/v1/namespaces/{NS}/rayservices/{name}"} <= routes
    # every call had an answer: a wrong path or verb would be a 404/405 here (as from a real API server)
    assert [(r.method, r.route) for r in api_server.requests if r.code >= 400] == [
        ("GET", f"/api/v1/namespaces/{NS}/pods/nothing/log"), ("GET", f"/api/v1/namespaces/{NS}/pods/stuck-0/log")]


def test_teardown_deletes_only_labelled_objects_and_claims(api_server: FakeApiServer) -> None:
    api_server.add(labelled({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ours", "namespace": NS}}))
    api_server.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs", "namespace": NS}})
    api_server.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kuberay"}})  # helm-made, unlabelled
    api_server.add({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": "data-langfuse-0", "namespace": "langfuse", "labels": {"app.kubernetes.io/instance": "langfuse"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    entries = [labelled({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "namespace": NS}})
               for n in ("ours", "theirs", "gone")]  # all three planned; live, only "ours" carries the label
    entries.append(teardown.plan_entry("v1", "Namespace", "kuberay", None, "01-cluster-and-nodepools"))
    entries.append(teardown.plan_entry(teardown.HELM_API, "PersistentVolumeClaims",
                                       "app.kubernetes.io/instance=langfuse", "langfuse", "05-observability"))
    plan = teardown.plan(entries)

    dry = teardown.execute_all(plan, dry_run=True, settings=SETTINGS)
    report = teardown.execute_all(plan, dry_run=False, settings=SETTINGS)

    assert "would delete ConfigMap/llm-workshop/ours" in dry and "would delete PVCs data-langfuse-0" in dry
    assert set(report[:5]) == {
        "deleted ConfigMap/llm-workshop/ours",
        "absent  ConfigMap/llm-workshop/gone",
        "skipped ConfigMap/llm-workshop/theirs: on the cluster it lacks app.kubernetes.io/part-of=llm-eks-workshop",
        "skipped Namespace/kuberay: on the cluster it lacks app.kubernetes.io/part-of=llm-eks-workshop (made by "
        "`helm --create-namespace`? check it holds nothing else, then `kubectl delete namespace kuberay`)",
        "deleted PVCs data-langfuse-0",
    }
    delete = api_server.calls("DELETE", f"/api/v1/namespaces/{NS}/configmaps/ours")[0]
    assert delete.body["propagationPolicy"] == "Foreground"
    assert f"/api/v1/namespaces/{NS}/configmaps/theirs" in api_server.objects
    assert api_server.calls("GET", "/api/v1/namespaces/langfuse/persistentvolumeclaims")[0].query["labelSelector"] \
        == ["app.kubernetes.io/instance=langfuse"]


@pytest.fixture
def fake_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `helm` on PATH that records its arguments (one line each call) and answers `helm list` with []."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "helm-calls.txt"
    helm = bin_dir / "helm"
    helm.write_text(f"#!/bin/sh\necho \"$*\" >> {record}\n[ \"$1\" = list ] && echo '[]'\nexit 0\n")
    helm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_langfuse_install_reads_kept_secrets_and_applies(api_server: FakeApiServer, fake_helm: Path,
                                                         tmp_path: Path) -> None:
    from helpers.layers.observability import deploy as observability

    for crd in getattr(observability, "CLICKHOUSE_CRDS", ()):  # the ClickHouse operator is installed
        plural, _, group = crd.partition(".")
        api_server.add({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                        "metadata": {"name": crd}, "spec": {
                            "group": group, "scope": "Namespaced", "names": {"plural": plural, "kind": plural.title()},
                            "versions": [{"name": "v1alpha1", "served": True, "storage": True}]}})
    t = Target("eks", SETTINGS)
    names = observability.install(t, tmp_path / "values.yaml")
    lf = observability.parameters()["langfuse"]
    assert "upgrade --install" in fake_helm.read_text()
    reads = [r.route for r in api_server.calls("GET", f"/api/v1/namespaces/{lf['namespace']}/secrets/")]
    assert reads and all(r.rsplit("/", 1)[1] in names for r in reads)
    applied = {r.route for r in api_server.calls("PATCH")}
    assert f"/api/v1/namespaces/{lf['namespace']}" in applied
    assert f"/api/v1/namespaces/{NS}/secrets/{observability.KEYS_SECRET}" in applied
    unexpected = [(r.method, r.route, r.code) for r in api_server.requests
                  if r.code >= 400 and not (r.code == 404 and r.method == "GET" and r.route in set(reads) | applied)]
    # (a 404 is right for a Secret or object that does not exist yet: read first, then created by apply)
    assert unexpected == []


def test_operators_install_runs_helm_after_the_cluster_answers(api_server: FakeApiServer, fake_helm: Path,
                                                               tmp_path: Path) -> None:
    releases = k8s.operator_releases("auto-mode", NS, "test-cluster")
    done = k8s.install_operators(releases, str(tmp_path / "values"))
    assert len(done) >= len(releases) and "upgrade --install" in fake_helm.read_text()
    assert api_server.calls("GET", "/version")
