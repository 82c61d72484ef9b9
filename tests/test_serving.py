"""The Ray Serve app, with the real OpenAI client against a real local Ray (isolated state folder and ports)."""

from __future__ import annotations

import base64
import re
import struct
import time
from pathlib import Path

import httpx
import psutil
import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI

from helpers.config import Settings
from helpers.layers.ray.local import SESSION_SUFFIX, SOCKET_PATH_LIMIT, local_app_args, ray_cpus, ray_temp_dir
from helpers.local import stack
from helpers.target import Target
from services.ray_app.app import AppArgs, EmbeddingRequest, OpenAIError, embedding_texts, float32_base64

ROOT = Path(__file__).resolve().parents[1]

# What manifests/03-ray-serve/parameters.yaml holds today, written out: the tests below compare the manifest, the
# image and the code with these literals (not with the file they test), and test_parameters_are_the_expected_ones
# checks the file still says the same. Change a value there: change it here too.
RAY_VERSION = "2.60.0"
LLAMA_CPP_VERSION = "0.3.36"
BASE_IMAGE = "rayproject/ray:2.60.0-py311-aarch64"
IMAGE_TAG = "2.60.0-llama0.3.36-1"
EMBEDDING_PATH = "/models/all-MiniLM-L6-v2-f16.gguf"
CHAT_PATH = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
SERVE_SERVICE = "ray-serve-serve-svc"  # KubeRay's <RayService name>-serve-svc; the gateway's embedding route
APP_ARGS = {
    "embedding_model_path": EMBEDDING_PATH,
    "embedding_model_name": "embedding",
    "chat_model_path": CHAT_PATH,
    "chat_model_name": "smollm2-135m-instruct-q4_1",
    "max_batch_size": 32,
    "batch_wait_timeout_s": 0.01,
    "api_key_env": "WORKSHOP_SERVE_API_KEY",
}
DEPLOYMENTS = [  # serveConfigV2's deployments, in the template's order
    {"name": "Embedder", "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 2},
     "autoscaling_config": {"min_replicas": 1, "max_replicas": 6, "target_ongoing_requests": 8,
                            "upscale_delay_s": 10, "downscale_delay_s": 300}},
    {"name": "ChatModel", "num_replicas": 1, "ray_actor_options": {"num_cpus": 2}},
    {"name": "OpenAIIngress", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0}},
]


@pytest.fixture
def serve_app(isolated_settings: Settings):
    """The stack's ray-serve service, started in the isolated state folder; stopped afterwards."""
    stack.ensure("ray-serve")
    yield isolated_settings
    stack.down()


def ray_processes(settings: Settings) -> list[psutil.Process]:
    """Processes of this isolated stack's Ray: by the stack's marker, or by Ray's temp folder on the command line."""
    temp = str(ray_temp_dir(settings))
    found = {p.pid: p for p in stack.running_processes()}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp in part for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return list(found.values())


def client(settings: Settings, key: str | None = None) -> OpenAI:
    return OpenAI(base_url=f"http://{settings.host}:{settings.serve_port}/v1", max_retries=0, timeout=120,
                  api_key=key if key is not None else settings.serve_api_key.get_secret_value())


# ---------------------------------------------------------------- against the running app


@pytest.mark.services
def test_openai_client_embeddings_chat_and_errors(serve_app: Settings) -> None:
    settings = serve_app
    api = client(settings)
    # locally the chat route forwards to the stack's llama.cpp server: the chat model is in memory once
    assert {m.id for m in api.models.list().data} == {settings.served_embedding_model, settings.served_chat_model}

    # embeddings: the client's default (base64) and floats agree; vectors are 384-d and normalised
    texts = ["Karpenter adds a Graviton node.", "Ray Serve batches embedding requests.", "A third text."]
    b64 = api.embeddings.create(model=settings.served_embedding_model, input=texts)
    floats = api.embeddings.create(model=settings.served_embedding_model, input=texts, encoding_format="float")
    assert [d.index for d in b64.data] == [0, 1, 2] and b64.usage.prompt_tokens > len(texts)
    for a, b in zip(b64.data, floats.data):
        assert len(a.embedding) == 384
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
        assert abs(sum(x * x for x in b.embedding) - 1.0) < 1e-3
    single = api.embeddings.create(model=settings.served_embedding_model, input=texts[0], encoding_format="float")
    assert max(abs(x - y) for x, y in zip(single.data[0].embedding, floats.data[0].embedding)) < 1e-4

    # chat (non-streaming and streaming), answered by the llama.cpp server behind the app
    reply = api.chat.completions.create(model=settings.served_chat_model, max_tokens=8, temperature=0,
                                        messages=[{"role": "user", "content": "Say OK."}])
    assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens <= 8
    assert reply.model == settings.served_chat_model
    pieces = [c.choices[0].delta.content or "" for c in api.chat.completions.create(
        model=settings.served_chat_model, max_tokens=8, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Say OK."}]) if c.choices]
    assert "".join(pieces).strip()
    # only the served name: another model's name (the small model's file name included) is a 404, as on vLLM
    for unknown in ("gpt-4o", settings.smoke_model):
        with pytest.raises(NotFoundError):
            api.chat.completions.create(model=unknown, max_tokens=8, messages=[{"role": "user", "content": "x"}])

    # 401: no key, wrong key; the body is OpenAI-shaped
    with pytest.raises(AuthenticationError) as wrong:
        client(settings, key="sk-serve-wrong").embeddings.create(model=settings.served_embedding_model, input="x")
    assert wrong.value.status_code == 401 and wrong.value.body["code"] == "invalid_api_key"
    bare = httpx.post(f"http://{settings.host}:{settings.serve_port}/v1/embeddings",
                      json={"model": settings.served_embedding_model, "input": "x"}, timeout=30)
    assert bare.status_code == 401 and set(bare.json()["error"]) >= {"message", "type", "code"}
    # the key may also come as X-Api-Key (for calls through the Kubernetes API server's service proxy)
    for key, expected in ((settings.serve_api_key.get_secret_value(), 200), ("sk-serve-wrong-key-0000", 401)):
        proxied = httpx.get(f"http://{settings.host}:{settings.serve_port}/v1/models", timeout=30,
                            headers={"X-Api-Key": key, "Authorization": "Bearer kubernetes-token"})
        assert proxied.status_code == expected

    # 400: empty input, in every shape
    for empty in ("", [], ["ok", "   "]):
        with pytest.raises(BadRequestError) as err:
            api.embeddings.create(model=settings.served_embedding_model, input=empty)
        assert err.value.status_code == 400 and err.value.body["code"] == "empty_input"
    with pytest.raises(BadRequestError) as err:
        api.chat.completions.create(model=settings.served_chat_model, messages=[])
    assert err.value.body["code"] == "empty_input"

    # 4xx: oversize input (too many tokens, too many characters, too many texts, too big a body)
    with pytest.raises(BadRequestError) as err:
        api.embeddings.create(model=settings.served_embedding_model, input=" ".join(["word"] * 1000))
    assert err.value.body["code"] == "context_length_exceeded" and "512" in err.value.message
    with pytest.raises(BadRequestError) as err:
        api.embeddings.create(model=settings.served_embedding_model, input="x" * 9000)
    assert err.value.body["code"] == "input_too_large"
    with pytest.raises(BadRequestError) as err:
        api.embeddings.create(model=settings.served_embedding_model, input=["a"] * 300)
    assert err.value.body["code"] == "too_many_inputs"
    huge = httpx.post(f"http://{settings.host}:{settings.serve_port}/v1/embeddings",
                      headers={"Authorization": f"Bearer {settings.serve_api_key.get_secret_value()}"},
                      content=b'{"model": "embedding", "input": "' + b"a" * 2_100_000 + b'"}', timeout=60)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"

    # 404 for an unknown model; the app never answers an error with HTTP 200
    with pytest.raises(NotFoundError):
        api.embeddings.create(model="text-embedding-3-large", input="x")

    # batching is visible: a burst of concurrent requests shared llama.cpp calls (no wait: batch_wait_timeout_s=0)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: api.embeddings.create(model=settings.served_embedding_model,
                                                      input=[f"text {i} {j}" for j in range(4)]), range(16)))
    stats = httpx.get(f"http://{settings.host}:{settings.serve_port}/stats", timeout=30,
                      headers={"Authorization": f"Bearer {settings.serve_api_key.get_secret_value()}"}).json()
    assert stats["batches"]["count"] >= 1 and max(stats["batches"]["recent_requests_per_batch"]) >= 2
    assert stats["deployments"]["Embedder"]["replicas"].get("RUNNING", 0) >= 1


@pytest.mark.services
def test_stack_service_listens_on_loopback_and_stops_leaving_no_ray_process(isolated_settings: Settings) -> None:
    settings = isolated_settings
    token_file = Path.home() / ".ray" / "auth_token"
    had_token_file = token_file.exists()
    try:
        status = stack.ensure("ray-serve")
        assert status.state == "healthy" and status.url == f"http://{settings.host}:{settings.serve_port}/v1"
        procs = ray_processes(settings)
        names = " ".join(" ".join(p.cmdline()) for p in procs)
        assert "raylet" in names and "gcs_server" in names and "ServeReplica" in names
        assert "ChatModel" not in names, "locally the chat route forwards to model-server: no second chat model"
        assert "log_monitor.py" in names, "replica output still reaches the service log"
        assert "dashboard/agent.py" in names, "the agent that exports the ray_serve_* metrics runs"
        assert not re.search(r"autoscaler/(_private|v2)/monitor\.py|dashboard/dashboard\.py", names), \
            "the unused head processes are not started"
        time.sleep(3)  # the agent's event reporter asked for the API server's address once a second without it
        agent_logs = list(ray_temp_dir(settings).glob("session_*/logs/dashboard_agent.log"))
        assert agent_logs and not any("ERROR" in log.read_text() for log in agent_logs), agent_logs
        replicas = [p for p in procs if p.cmdline() and p.cmdline()[0].startswith("ray::ServeReplica")]
        assert replicas and not any(m.path.endswith("/pandas/__init__.py") or "/pandas/" in m.path
                                    for p in replicas for m in p.memory_maps()), "pandas is kept out of Ray"
        pids = {p.pid for p in procs}
        listening = [c.laddr.ip for c in psutil.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids]
        assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening), listening
    finally:  # a failed assertion above must not leave Ray running for the next test or run
        stack.down()
    deadline = time.monotonic() + 15
    while ray_processes(settings) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_processes(settings) == []
    assert not ray_temp_dir(settings).exists(), "Ray's temporary folder is removed on shutdown"
    assert stack.service_status("ray-serve").state == "stopped"
    assert token_file.exists() == had_token_file, "Ray's auth token lives in the service's environment only"


@pytest.mark.services
def test_a_killed_raylet_brings_the_whole_service_back(serve_app: Settings) -> None:
    """Ray's own core process dies: the launcher exits, and the stack's supervisor starts ray-serve again."""
    import os
    import signal

    before = stack.service_status("ray-serve")
    raylet = next(p for p in psutil.Process(before.pid).children(recursive=True) if p.name() == "raylet")
    os.kill(raylet.pid, signal.SIGKILL)
    deadline = time.monotonic() + stack.get_service("ray-serve").start_timeout + 30
    while time.monotonic() < deadline:
        now = stack.service_status("ray-serve")
        if now.state == "healthy" and now.pid != before.pid:
            break
        time.sleep(1)
    assert now.state == "healthy" and now.pid != before.pid and now.restarts == 1, now
    assert client(serve_app).embeddings.create(model=serve_app.served_embedding_model, input="back").data


# ---------------------------------------------------------------- pure parts (no Ray)


def test_the_head_processes_the_launcher_skips_are_still_started_by_these_methods() -> None:
    """skip_unused_head_processes replaces two methods of Ray's head node: they must exist with these signatures
    and be what starts the autoscaler's monitor and the dashboard's API server (a Ray upgrade that moves them
    would otherwise bring the ~250 MB back silently, or break ray.init)."""
    import inspect

    from ray._private import node

    head = inspect.getsource(node.Node.start_head_processes)
    assert "self.start_monitor()" in head and "self.start_api_server(" in head
    assert list(inspect.signature(node.Node.start_monitor).parameters) == ["self"]
    assert list(inspect.signature(node.Node.start_api_server).parameters) == [
        "self", "include_dashboard", "raise_on_failure"]
    assert "ray._private.services.start_monitor(" in inspect.getsource(node.Node.start_monitor)
    assert "ray._private.services.start_api_server(" in inspect.getsource(node.Node.start_api_server)


def test_embedding_input_validation_names_the_problem() -> None:
    def texts(value: object) -> list[str]:
        return embedding_texts(EmbeddingRequest(model="embedding", input=value), max_inputs=4, max_chars=10)

    assert texts("hello") == ["hello"] and texts(["a", "b"]) == ["a", "b"]
    cases = {"": "empty_input", (): "empty_input", ("a", " "): "empty_input", ("a",) * 5: "too_many_inputs",
             "x" * 11: "input_too_large", (1, 2, 3): "unsupported_input"}
    for value, code in cases.items():
        with pytest.raises(OpenAIError) as err:
            texts(list(value) if isinstance(value, tuple) else value)
        assert err.value.status == 400 and err.value.code == code
        assert set(err.value.body()["error"]) == {"message", "type", "code", "param"}


def test_chat_upstream_errors_name_the_upstream_and_never_pass_as_200() -> None:
    import asyncio
    import socket

    from services.ray_app.app import ChatUpstream

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    upstream = ChatUpstream(f"http://127.0.0.1:{port}/v1", "reasoning", None, timeout=5)
    params = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    down = asyncio.run(upstream.complete(params))["error"]
    assert down["status"] == 503 and down["code"] == "upstream_unavailable" and str(port) in down["message"]
    streamed = asyncio.run(anext(upstream.stream(params)))["error"]
    assert streamed["status"] == 503
    rejected = upstream.error(400, '{"error": {"message": "prompt too long", "code": "x"}}')["error"]
    assert rejected == {"status": 400, "code": "upstream_rejected", "message": "prompt too long"}
    assert upstream.error(500, "boom")["error"]["status"] == 502


def test_base64_encoding_is_little_endian_float32() -> None:
    vector = [0.5, -1.25, 3.0]
    raw = base64.b64decode(float32_base64(vector))
    assert list(struct.unpack("<3f", raw)) == vector


def test_app_args_are_strict_and_local_args_use_verified_models(isolated_settings: Settings) -> None:
    with pytest.raises(ValueError):
        AppArgs.model_validate({"embedding_model_path": "/m.gguf", "api_key": "sk-should-never-be-an-arg"})
    args = local_app_args(isolated_settings)
    assert Path(args["embedding_model_path"]).is_file() and "chat_model_path" not in args
    assert args["embedding_model_name"] == isolated_settings.served_embedding_model
    assert args["chat_upstream_url"] == isolated_settings.model_server_url  # the chat model is loaded once
    assert args["chat_model_name"] == isolated_settings.served_chat_model
    assert "key" not in " ".join(str(v) for k, v in args.items() if not k.endswith("key_env")).lower()
    assert ray_cpus(args) == 2  # two 1-CPU Embedder replicas at most; no chat replica locally
    assert ray_cpus({**args, "chat_model_path": "/m.gguf", "chat_cpus": 1}) == 3
    with pytest.raises(ValueError, match="not both"):
        AppArgs.model_validate({**args, "chat_model_path": "/m.gguf"})


def test_ray_temp_dir_fits_unix_socket_paths(tmp_path: Path) -> None:
    short = Settings(_env_file=None, state_dir=Path("/tmp/ws"))
    assert ray_temp_dir(short) == Path("/tmp/ws/ray")
    deep = Settings(_env_file=None, state_dir=tmp_path / ("x" * 80) / "state")
    chosen = ray_temp_dir(deep)
    assert len(str(chosen)) + SESSION_SUFFIX <= SOCKET_PATH_LIMIT and chosen != ray_temp_dir(short)


# ---------------------------------------------------------------- the RayService, the image, the code agree


def _rayservice() -> dict:
    items = Target("eks", Settings(_env_file=None)).render("03-ray-serve")
    return next(m.doc for m in items if m.kind == "RayService")


def _serve_app_config() -> dict:
    import yaml

    return yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])["applications"][0]


def test_parameters_are_the_expected_ones() -> None:
    """The parameters file and this test's literals agree (so a change to either is seen, and made in both)."""
    from helpers.layers.ray import deploy as ray_cluster

    params = ray_cluster.parameters()
    assert params["ray_version"] == RAY_VERSION and params["base_image"] == BASE_IMAGE
    assert params["image"]["tag"] == IMAGE_TAG and params["name"] + "-serve-svc" == SERVE_SERVICE
    assert params["models"] == {"embedding_path": EMBEDDING_PATH, "embedding_name": APP_ARGS["embedding_model_name"],
                                "chat_path": CHAT_PATH, "chat_name": APP_ARGS["chat_model_name"]}
    embedder, chat, ingress = DEPLOYMENTS
    assert params["embedder"] == {"num_cpus": embedder["ray_actor_options"]["num_cpus"],
                                  "max_ongoing_requests": embedder["max_ongoing_requests"],
                                  "max_batch_size": APP_ARGS["max_batch_size"],
                                  "batch_wait_timeout_s": APP_ARGS["batch_wait_timeout_s"],
                                  "autoscaling": embedder["autoscaling_config"]}
    assert params["chat"] == {"num_cpus": chat["ray_actor_options"]["num_cpus"], "replicas": chat["num_replicas"]}
    assert params["ingress"] == {"num_cpus": ingress["ray_actor_options"]["num_cpus"],
                                 "replicas": ingress["num_replicas"]}
    assert params["api_key_secret"]["key"] == APP_ARGS["api_key_env"]


def test_ray_version_is_the_same_in_manifest_image_dockerfile_and_lock() -> None:
    from importlib.metadata import version

    dockerfile = (ROOT / "manifests" / "03-ray-serve" / "image" / "Dockerfile").read_text()
    lock = (ROOT / "requirements" / "workshop.txt").read_text()
    assert _rayservice()["spec"]["rayClusterConfig"]["rayVersion"] == RAY_VERSION == version("ray")
    assert BASE_IMAGE == f"rayproject/ray:{RAY_VERSION}-py311-aarch64"
    assert f"ARG RAY_IMAGE={BASE_IMAGE}\n" in dockerfile
    assert f"\nray=={RAY_VERSION}\n" in lock and f"ray.__version__ == '{RAY_VERSION}'" in dockerfile
    assert version("llama_cpp_python") == LLAMA_CPP_VERSION
    assert f"\nllama-cpp-python[server]=={LLAMA_CPP_VERSION}\n" in lock
    assert f"llama-cpp-python=={LLAMA_CPP_VERSION}\n" in dockerfile
    assert f"llama_cpp_python-{LLAMA_CPP_VERSION}-" in dockerfile
    assert IMAGE_TAG.startswith(f"{RAY_VERSION}-llama{LLAMA_CPP_VERSION}-")
    images = {c["image"] for _where, spec in _pod_specs() for c in spec["containers"]}
    assert images == {f"aws_account_id.dkr.ecr.us-west-2.amazonaws.com/llm-eks-workshop/ray-llama:{IMAGE_TAG}"}


def _pod_specs() -> list[tuple[str, dict]]:
    from helpers.infra import manifests

    return list(manifests.pod_specs(_rayservice()))


def test_image_compiles_nothing_at_start_up_and_bakes_verified_models() -> None:
    from helpers.layers import models

    dockerfile = (ROOT / "manifests" / "03-ray-serve" / "image" / "Dockerfile").read_text()
    final_stage = dockerfile.split("AS wheel", 1)[1].split("\nFROM ", 1)[1]
    assert "pip wheel" not in final_stage and "cmake" not in final_stage.lower(), "compile only in the wheel stage"
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    assert "OMP_NUM_THREADS" not in instructions and "-march=native" not in instructions
    assert "-DGGML_NATIVE=OFF" in instructions
    settings = Settings(_env_file=None)
    for name, path in ((settings.embedding_model, EMBEDDING_PATH), (settings.smoke_model, CHAT_PATH)):
        spec = models.get_spec(name)
        assert path == f"/models/{spec.filename}"
        assert f'echo "{spec.sha256}  {path}" | sha256sum -c -' in dockerfile
    ignore = (ROOT / "manifests" / "03-ray-serve" / "image" / "Dockerfile.dockerignore").read_text()
    rules = [line for line in ignore.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*" and "!services/ray_app/app.py" in rules and not any(".env" in r for r in rules)
    assert not any("helpers" in r for r in rules), "the Ray app imports nothing from the workshop's library"


def test_rayservice_runs_the_same_app_on_graviton_with_autoscaling() -> None:
    from helpers.infra import manifests
    from services.ray_app import app as serving

    doc = _rayservice()
    assert manifests.check([doc]) == []
    app = _serve_app_config()
    assert app["import_path"] == "services.ray_app.app:app_builder"
    assert app["args"] == APP_ARGS
    args = serving.AppArgs.model_validate(app["args"])  # the args the cluster passes are ones the code accepts
    assert args.api_key_env == "WORKSHOP_SERVE_API_KEY" and "sk-" not in doc["spec"]["serveConfigV2"]
    assert app["deployments"] == DEPLOYMENTS
    assert isinstance(app["deployments"][0]["ray_actor_options"]["num_cpus"], int)  # whole CPUs = llama.cpp threads
    assert [d["name"] for d in DEPLOYMENTS] == [serving.Embedder.name, serving.ChatModel.name,
                                                 serving.OpenAIIngress.name]
    scaling = DEPLOYMENTS[0]["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"] and scaling["target_ongoing_requests"] > 0
    for where, spec in manifests.pod_specs(doc):
        assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "graviton", "kubernetes.io/arch": "arm64"}, where
        container = spec["containers"][0]
        assert container["readinessProbe"] and container["resources"]["limits"]["memory"]
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["WORKSHOP_SERVE_API_KEY"]["valueFrom"]
        assert "OMP_NUM_THREADS" not in env
    assert doc["spec"]["serveService"]["metadata"]["name"] == SERVE_SERVICE
    assert manifests.chapter_parameters("04-gateway")["routes"]["embedding"]["eks_service"] == SERVE_SERVICE


# ---------------------------------------------------------------- the application graph, built without a cluster


def built_deployments(app: object) -> dict[str, object]:
    """The deployments of a Serve application as `serve build` lists them (Ray's own builder: no Ray, no cluster)."""
    from ray.serve._private.build_app import build_app  # what serve.run and `serve build` use to walk the graph

    return {d.name: d for d in build_app(app, name="workshop").deployments}


def deployment_config(deployment: object) -> dict:
    """One deployment's config in the Serve config format (serveConfigV2's `deployments` entries)."""
    from ray.serve.deployment import deployment_to_schema

    return deployment_to_schema(deployment).model_dump(exclude_unset=True)


def test_app_builder_binds_three_deployments_without_a_cluster(isolated_settings: Settings) -> None:
    from ray.serve.handle import DeploymentHandle

    from services.ray_app.app import app_builder

    local = local_app_args(isolated_settings)
    assert list(built_deployments(app_builder(local))) == ["Embedder", "OpenAIIngress"]  # chat: forwarded
    # with a chat model file (as the RayService on EKS has), the ChatModel deployment is there
    args = {**local, "chat_upstream_url": None, "chat_model_path": CHAT_PATH, "chat_cpus": 1}
    built = built_deployments(app_builder(args))
    assert list(built) == ["Embedder", "ChatModel", "OpenAIIngress"]
    configs = {name: deployment_config(d) for name, d in built.items()}
    assert configs["Embedder"] == {
        "name": "Embedder", "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 1},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                               "upscale_delay_s": 2.0, "downscale_delay_s": 8.0, "look_back_period_s": 5.0,
                               "metrics_interval_s": 1.0}}  # the laptop's autoscaling (helpers.layers.ray.local)
    assert configs["ChatModel"] == {"name": "ChatModel", "max_ongoing_requests": 8,
                                    "ray_actor_options": {"num_cpus": 1}}
    assert configs["OpenAIIngress"] == {"name": "OpenAIIngress", "max_ongoing_requests": 256,
                                        "ray_actor_options": {"num_cpus": 0}}
    # batching: the Embedder's bound arguments set @serve.batch's size and wait at start-up
    assert built["Embedder"].init_args == (args["embedding_model_path"], 512, 32, 0.0)  # no wait (issue 13)
    assert built["ChatModel"].init_args == (args["chat_model_path"], 2048)
    embedder, chat, ingress_args = built["OpenAIIngress"].init_args
    assert isinstance(embedder, DeploymentHandle) and embedder.deployment_name == "Embedder"
    assert isinstance(chat, DeploymentHandle) and chat.deployment_name == "ChatModel"
    assert ingress_args == AppArgs.model_validate(args).model_dump()

    # the arguments reach the graph: other CPUs, batch size, wait and autoscaling; no chat model, no ChatModel
    other = {**args, "chat_model_path": None, "embedding_cpus": 2, "max_batch_size": 48, "batch_wait_timeout_s": 0.05,
             "embedding_autoscaling": {"min_replicas": 2, "max_replicas": 3, "target_ongoing_requests": 5}}
    built = built_deployments(app_builder(other))
    assert list(built) == ["Embedder", "OpenAIIngress"]
    assert deployment_config(built["Embedder"]) == {
        "name": "Embedder", "max_ongoing_requests": 96, "ray_actor_options": {"num_cpus": 2},
        "autoscaling_config": {"min_replicas": 2, "max_replicas": 3, "target_ongoing_requests": 5}}
    assert built["Embedder"].init_args == (args["embedding_model_path"], 512, 48, 0.05)
    assert built["OpenAIIngress"].init_args[1] is None
