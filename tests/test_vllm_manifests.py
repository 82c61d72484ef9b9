"""Chapter 02's vLLM manifests: valid, within policy, explained line by line, and what the other chapters expect."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.infra import aws, k8s, manifests, scheduling
from helpers.layers.vllm import deploy as vllm_cluster
from helpers.config import Settings
from helpers.target import Target
from tests.template_comments import uncommented_fields

V1_LOG = (
    "(EngineCore_DP0 pid=311) INFO 11-27 09:12:01 [gpu_worker.py:298] Available KV cache memory: 11.52 GiB\n"
    "(EngineCore_DP0 pid=311) INFO 11-27 09:12:02 [kv_cache_utils.py:1087] GPU KV cache size: 301,952 tokens\n"
)

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "02-vllm"
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop")


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return {m.ref: m.doc for m in manifests.render_chapter(CHAPTER, target="eks", settings=SETTINGS)}


def container(objects: dict[str, dict], server: str) -> dict:
    return objects[f"Deployment/llm-workshop/{server}"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("target", manifests.TARGETS)
@pytest.mark.parametrize("flavour", manifests.FLAVOURS)
def test_the_chapter_passes_validation_and_policy(target: str, flavour: str) -> None:
    items = manifests.render_chapter(CHAPTER, target=target, flavour=flavour, settings=SETTINGS)
    assert sorted(m.kind for m in items) == (["Deployment"] * 2 + ["NetworkPolicy"] * 2 + ["PersistentVolumeClaim"] * 2
                                            + ["Service"] * 2)
    assert manifests.check(items) == []


def test_no_secret_values_are_rendered(objects: dict[str, dict]) -> None:
    assert not [ref for ref in objects if ref.startswith("Secret/")]
    env = {e["name"]: e for e in container(objects, "vllm-reasoning")["env"]}
    ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hf-token", "key": "token", "optional": True} and "value" not in env["HF_TOKEN"]


@pytest.mark.parametrize("server", ["vllm-reasoning", "vllm-vision"])
def test_vllm_requires_the_gateways_key(objects: dict[str, dict], server: str) -> None:
    """vLLM's --api-key (VLLM_API_KEY) comes from a Secret, never optional: a pod without the key is refused."""
    env = {e["name"]: e for e in container(objects, server)["env"]}
    ref = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "model-server-api-key", "key": "MODEL_SERVER_API_KEY"} and "value" not in env["VLLM_API_KEY"]
    args = container(objects, server)["args"]
    assert not any(str(a).startswith("--api-key") for a in args), "never on the command line (ps would show it)"


def test_vllm_and_the_gateway_hold_the_same_key() -> None:
    from pydantic import SecretStr

    from helpers.errors import WorkshopError
    from helpers.layers.gateway import deploy as gateway_deploy

    settings = SETTINGS.model_copy(update={"model_server_api_key": SecretStr("sk-model-" + "k" * 24)})
    vllm_secret = vllm_cluster.api_key_secret("llm-workshop", settings)
    gateway_secret = next(s for s in gateway_deploy.secret_objects("llm-workshop", settings)
                          if s["metadata"]["name"] == gateway_deploy.SECRET_NAME)
    assert vllm_secret["stringData"]["MODEL_SERVER_API_KEY"] == gateway_secret["stringData"]["MODEL_SERVER_API_KEY"]
    assert vllm_secret["metadata"]["labels"][manifests.PART_OF_LABEL] == manifests.PART_OF
    with pytest.raises(WorkshopError, match="model server API key"):
        vllm_cluster.api_key_secret("llm-workshop", SETTINGS.model_copy(update={"model_server_api_key": None}))


@pytest.mark.parametrize("server", ["vllm-reasoning", "vllm-vision"])
def test_only_the_gateway_and_prometheus_reach_vllm(objects: dict[str, dict], server: str) -> None:
    from helpers.infra import k8s

    policy = objects[f"NetworkPolicy/llm-workshop/{server}"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": server}}
    assert policy["policyTypes"] == ["Ingress"]
    sources = [rule["from"] for rule in policy["ingress"]]
    monitoring = {"kubernetes.io/metadata.name": k8s.MONITORING_NAMESPACE}
    assert sources == [[{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "litellm"}}}],
                       [{"namespaceSelector": {"matchLabels": monitoring}}]]
    assert all(rule["ports"] == [{"port": 8000, "protocol": "TCP"}] for rule in policy["ingress"])
    gateway_pods = [i.doc["spec"]["template"]["metadata"]["labels"] for i in manifests.render_chapter(
        "04-gateway", target="eks", settings=SETTINGS) if i.kind == "Deployment" and i.name == "litellm"]
    assert gateway_pods and gateway_pods[0]["app.kubernetes.io/name"] == "litellm", "the policy selects real pods"


def test_a_direct_call_goes_through_port_forward() -> None:
    """The NetworkPolicy admits only the gateway (and Prometheus): from a laptop, port-forward (it enters the pod)."""
    assert vllm_cluster.port_forward_command("reasoning", "llm-workshop") == \
        "kubectl -n llm-workshop port-forward svc/vllm-reasoning 18000:8000"


def test_reasoning_server_flags(objects: dict[str, dict]) -> None:
    c = container(objects, "vllm-reasoning")
    args = c["args"]
    assert c["command"] == ["vllm", "serve"] and args[0] == "Qwen/Qwen3-14B"
    for flag in ("--served-model-name=reasoning", "--tensor-parallel-size=4", "--max-model-len=32768",
                 "--gpu-memory-utilization=0.9", "--enable-auto-tool-choice", "--tool-call-parser=hermes",
                 "--reasoning-parser=qwen3", "--dtype=bfloat16", "--port=8000"):
        assert flag in args, flag
    assert manifests.image_tag(c["image"]) not in (None, "latest") and c["image"].startswith("vllm/vllm-openai:v")
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 4 == c["resources"]["limits"]["nvidia.com/gpu"]


def test_served_names_follow_the_workshop_convention(objects: dict[str, dict]) -> None:
    reasoning = container(objects, "vllm-reasoning")["args"]
    assert f"--served-model-name={Settings(_env_file=None).served_chat_model}" in reasoning
    vision = container(objects, "vllm-vision")["args"]
    assert vision[0] == "Qwen/Qwen2.5-VL-7B-Instruct" and "--served-model-name=vision" in vision
    assert any(a.startswith("--limit-mm-per-prompt=") for a in vision)


@pytest.mark.parametrize("server", ["vllm-reasoning", "vllm-vision"])
def test_pod_shape(objects: dict[str, dict], server: str) -> None:
    deployment = objects[f"Deployment/llm-workshop/{server}"]
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "RWO volume and all GPUs: never two pods at once"
    assert spec["nodeSelector"]["karpenter.sh/nodepool"] == "gpu"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    c = spec["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 1200, "minutes to load"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    claim = volumes["cache"]["persistentVolumeClaim"]["claimName"]
    pvc = objects[f"PersistentVolumeClaim/llm-workshop/{claim}"]
    storage_class = manifests.chapter_parameters("01-cluster-and-nodepools")["storage_class"]["name"]
    assert pvc["spec"]["storageClassName"] == storage_class
    service = objects[f"Service/llm-workshop/{server}"]
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["targetPort"] == "http"


def test_chapter_05_monitor_will_scrape_the_vllm_pods(objects: dict[str, dict]) -> None:
    rows = k8s.monitor_coverage(list(objects.values()), k8s.monitors("llm-workshop"))
    vllm_rows = [r for r in rows if r["what"] == "vLLM"]
    assert len(vllm_rows) == 2 and all(r["scraped by"] == "vllm" for r in vllm_rows)


def test_the_scheduler_reads_the_servers_from_the_manifests() -> None:
    t = Target("eks", SETTINGS, flavour="auto-mode")
    workloads = {w.name: w for w in scheduling.platform_workloads(t.render_all()) if w.chapter == CHAPTER}
    assert set(workloads) == {"vllm-reasoning", "vllm-vision"}
    assert workloads["vllm-reasoning"].gpus == 4 and workloads["vllm-vision"].gpus == 1
    pools = scheduling.node_pools(t)
    placed = {p.workload.name: p.pool for p in scheduling.explain(list(workloads.values()), pools,
                                                                   aws.load_instance_types())}
    assert placed == {"vllm-reasoning": "gpu", "vllm-vision": "gpu"}


def test_every_template_field_is_commented() -> None:
    """The notebook shows the rendered templates as the explanation: every field line carries a comment
    (same rule as chapter 01: block openers, list items and lines generated from data are exempt)."""
    assert uncommented_fields(ROOT / "manifests" / CHAPTER, "*.j2") == []


def test_hf_token_secret_comes_from_the_environment_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in vllm_cluster.HF_TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert vllm_cluster.hf_token_secret("llm-workshop") is None
    assert "HF_TOKEN is not set" in vllm_cluster.describe_secret(None)
    token = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    secret = vllm_cluster.hf_token_secret("llm-workshop")
    assert secret["stringData"] == {"token": token} and secret["metadata"]["name"] == "hf-token"
    assert secret["metadata"]["labels"][manifests.PART_OF_LABEL] == manifests.PART_OF
    shown = vllm_cluster.describe_secret(secret)
    assert token not in shown and "34" not in shown.split("(")[0] and "chars" in shown


def test_cluster_calls_fail_fast_without_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(k8s.ClusterUnreachable):
        vllm_cluster.call_service("vllm-reasoning", "llm-workshop", "/health")
    with pytest.raises(ValueError, match="known: reasoning, vision"):
        vllm_cluster.server_parameters("embedding")


# ---------------------------------------------------------------- calls through a (fake, local) API server


@pytest.fixture
def fake_api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback HTTP server that answers like the Kubernetes API server's version and service-proxy routes."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict] = []
    proxy = "/api/v1/namespaces/llm-workshop/services/vllm-reasoning:8000/proxy"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output quiet
            pass

        def _send(self, status: int, body: object) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            seen.append({"method": "GET", "path": self.path, "auth": self.headers.get("Authorization")})
            if self.path.rstrip("/") == "/version":
                self._send(200, {"major": "1", "minor": "36", "gitVersion": "v1.36.0", "gitCommit": "x",
                                 "gitTreeState": "clean", "buildDate": "2026-06-01T00:00:00Z", "goVersion": "go1.25",
                                 "compiler": "gc", "platform": "linux/amd64"})
            elif self.path == proxy + "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "reasoning"}]})
            elif self.path.startswith("/api/v1/namespaces/llm-workshop/pods?"):
                self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
                    {"metadata": {"name": "vllm-reasoning-abc", "namespace": "llm-workshop"},
                     "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "vllm", "image": "vllm"}]},
                     "status": {"phase": "Running"}}]})
            elif self.path.startswith("/api/v1/namespaces/llm-workshop/pods/vllm-reasoning-abc/log"):
                raw = V1_LOG.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            elif self.path == "/api/v1/nodes/gpu-node-1":
                self._send(200, {"kind": "Node", "apiVersion": "v1", "metadata": {
                    "name": "gpu-node-1", "labels": {"node.kubernetes.io/instance-type": "g6.12xlarge"}}})
            else:
                self._send(404, {"kind": "Status", "message": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
            seen.append({"method": "POST", "path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": "ok"}}], "echo": body})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{server.server_port}'}}}}]\n"
        "users: [{name: me, user: {token: test-token}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: me}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield seen
    server.shutdown()


def test_call_service_goes_through_the_api_server_proxy(fake_api_server: list[dict]) -> None:
    models = vllm_cluster.call_service("vllm-reasoning", "llm-workshop", "/v1/models")
    assert models.status == 200 and models.body["data"][0]["id"] == "reasoning"
    chat = vllm_cluster.call_service("vllm-reasoning", "llm-workshop", "/v1/chat/completions",
                                     body={"model": "reasoning", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status == 200 and chat.body["echo"]["model"] == "reasoning"
    post = next(r for r in fake_api_server if r["method"] == "POST")
    assert post["path"] == "/api/v1/namespaces/llm-workshop/services/vllm-reasoning:8000/proxy/v1/chat/completions"
    assert post["auth"] == "Bearer test-token", "the kubeconfig's credentials authenticate the call"
    missing = vllm_cluster.call_service("vllm-reasoning", "llm-workshop", "/nothing")
    assert missing.status == 404 and missing.body["message"] == "not found"


def test_the_plan_is_checked_against_the_running_servers_log(fake_api_server: list[dict]) -> None:
    from helpers.layers.vllm import planner

    log = vllm_cluster.server_log("reasoning", "llm-workshop")
    instance_type = vllm_cluster.server_instance_type("reasoning", "llm-workshop")
    assert "GPU KV cache size" in log and instance_type == "g6.12xlarge"
    rows = planner.compare_with_log(planner.server_plan("reasoning", instance_type), planner.parse_vllm_kv_log(log))
    assert {r["figure"] for r in rows} >= {"KV cache tokens", "KV cache memory per GPU (GiB)"}
