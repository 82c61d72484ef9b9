"""The Ray Serve app, with the real OpenAI client against a real local Ray (isolated state folder and ports)."""

from __future__ import annotations

import base64
import socket
import struct
import time
from pathlib import Path

import httpx
import psutil
import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI

from helpers import config
from helpers.local import stack
from helpers.config import Settings
from services.ray_app.app import AppArgs, EmbeddingRequest, OpenAIError, embedding_texts, float32_base64, local_app_args
from services.ray_app.local_launcher import SESSION_SUFFIX, SOCKET_PATH_LIMIT, ray_cpus, ray_temp_dir

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def isolated_settings(isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared isolated settings, plus a free port for Ray Serve (this module's own port variable)."""
    monkeypatch.setenv("WORKSHOP_SERVE_PORT", str(free_port()))
    return config.reload_settings()


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


def test_openai_client_embeddings_chat_and_errors(serve_app: Settings) -> None:
    settings = serve_app
    api = client(settings)
    assert {m.id for m in api.models.list().data} == {settings.served_embedding_model, settings.smoke_model}

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

    # chat (non-streaming and streaming)
    reply = api.chat.completions.create(model=settings.smoke_model, max_tokens=8, temperature=0,
                                        messages=[{"role": "user", "content": "Say OK."}])
    assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens <= 8
    pieces = [c.choices[0].delta.content or "" for c in api.chat.completions.create(
        model=settings.smoke_model, max_tokens=8, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Say OK."}]) if c.choices]
    assert "".join(pieces).strip()

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
        api.chat.completions.create(model=settings.smoke_model, messages=[])
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

    # batching is visible: concurrent requests shared llama.cpp calls
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: api.embeddings.create(model=settings.served_embedding_model,
                                                      input=[f"text {i} {j}" for j in range(4)]), range(16)))
    stats = httpx.get(f"http://{settings.host}:{settings.serve_port}/stats", timeout=30,
                      headers={"Authorization": f"Bearer {settings.serve_api_key.get_secret_value()}"}).json()
    assert stats["batches"]["count"] >= 1 and max(stats["batches"]["recent_requests_per_batch"]) >= 2
    assert stats["deployments"]["Embedder"]["replicas"].get("RUNNING", 0) >= 1


def test_stack_service_listens_on_loopback_and_stops_leaving_no_ray_process(isolated_settings: Settings) -> None:
    settings = isolated_settings
    token_file = Path.home() / ".ray" / "auth_token"
    had_token_file = token_file.exists()
    status = stack.ensure("ray-serve")
    assert status.state == "healthy" and status.url == f"http://{settings.host}:{settings.serve_port}/v1"
    procs = ray_processes(settings)
    names = " ".join(" ".join(p.cmdline()) for p in procs)
    assert "raylet" in names and "gcs_server" in names and "ServeReplica" in names
    pids = {p.pid for p in procs}
    listening = [c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening), listening

    stack.down()
    deadline = time.monotonic() + 15
    while ray_processes(settings) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_processes(settings) == []
    assert not ray_temp_dir(settings).exists(), "Ray's temporary folder is removed on shutdown"
    assert stack.service_status("ray-serve").state == "stopped"
    assert token_file.exists() == had_token_file, "Ray's auth token lives in the service's environment only"


# ---------------------------------------------------------------- pure parts (no Ray)


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


def test_base64_encoding_is_little_endian_float32() -> None:
    vector = [0.5, -1.25, 3.0]
    raw = base64.b64decode(float32_base64(vector))
    assert list(struct.unpack("<3f", raw)) == vector


def test_app_args_are_strict_and_local_args_use_verified_models(isolated_settings: Settings) -> None:
    with pytest.raises(ValueError):
        AppArgs.model_validate({"embedding_model_path": "/m.gguf", "api_key": "sk-should-never-be-an-arg"})
    args = local_app_args(isolated_settings)
    assert Path(args["embedding_model_path"]).is_file() and Path(args["chat_model_path"]).is_file()
    assert args["embedding_model_name"] == isolated_settings.served_embedding_model
    assert "key" not in " ".join(str(v) for k, v in args.items() if k != "api_key_env").lower()
    assert ray_cpus(args) == 3  # two 1-CPU Embedder replicas at most, plus the 1-CPU chat model


def test_ray_temp_dir_fits_unix_socket_paths(tmp_path: Path) -> None:
    short = Settings(_env_file=None, state_dir=Path("/tmp/ws"))
    assert ray_temp_dir(short) == Path("/tmp/ws/ray")
    deep = Settings(_env_file=None, state_dir=tmp_path / ("x" * 80) / "state")
    chosen = ray_temp_dir(deep)
    assert len(str(chosen)) + SESSION_SUFFIX <= SOCKET_PATH_LIMIT and chosen != ray_temp_dir(short)


# ---------------------------------------------------------------- the RayService, the image, the code agree


def _rayservice() -> dict:
    from helpers.infra import manifests

    items = manifests.render_chapter("03-ray-serve", target="eks", settings=Settings(_env_file=None))
    return next(m.doc for m in items if m.kind == "RayService")


def test_ray_version_is_the_same_in_manifest_image_dockerfile_and_lock() -> None:
    from importlib.metadata import version

    from helpers.layers.ray import deploy as ray_cluster

    params = ray_cluster.parameters()
    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "manifests" / "03-ray-serve" / "image" / "Dockerfile").read_text()
    lock = (root / "requirements" / "workshop.txt").read_text()
    ray_version = _rayservice()["spec"]["rayClusterConfig"]["rayVersion"]
    assert ray_version == params["ray_version"] == version("ray")
    assert params["base_image"] == f"rayproject/ray:{ray_version}-py311-aarch64"
    assert f"ARG RAY_IMAGE={params['base_image']}" in dockerfile
    assert f"\nray=={ray_version}\n" in lock and f"ray.__version__ == '{ray_version}'" in dockerfile
    llama = version("llama_cpp_python")
    assert f"llama-cpp-python=={llama}" in dockerfile and f"llama_cpp_python-{llama}-" in dockerfile
    assert params["image"]["tag"].startswith(f"{ray_version}-llama{llama}-")


def test_image_compiles_nothing_at_start_up_and_bakes_verified_models() -> None:
    from helpers.layers import models
    from helpers.layers.ray import deploy as ray_cluster

    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "manifests" / "03-ray-serve" / "image" / "Dockerfile").read_text()
    final_stage = dockerfile.split("AS wheel", 1)[1].split("\nFROM ", 1)[1]
    assert "pip wheel" not in final_stage and "cmake" not in final_stage.lower(), "compile only in the wheel stage"
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    assert "OMP_NUM_THREADS" not in instructions and "-march=native" not in instructions
    assert "-DGGML_NATIVE=OFF" in instructions
    paths = ray_cluster.parameters()["models"]
    for name, path in ((Settings(_env_file=None).embedding_model, paths["embedding_path"]),
                       (Settings(_env_file=None).smoke_model, paths["chat_path"])):
        spec = models.get_spec(name)
        assert path == f"/models/{spec.filename}"
        assert f'echo "{spec.sha256}  {path}" | sha256sum -c -' in dockerfile
    ignore = (root / "manifests" / "03-ray-serve" / "image" / "Dockerfile.dockerignore").read_text()
    rules = [line for line in ignore.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*" and "!services/ray_app/app.py" in rules and not any(".env" in r for r in rules)


def test_rayservice_runs_the_same_app_on_graviton_with_autoscaling() -> None:
    import yaml

    from helpers.infra import manifests
    from services.ray_app import app as serving

    doc = _rayservice()
    assert manifests.check([doc]) == []
    config_ = yaml.safe_load(doc["spec"]["serveConfigV2"])
    app = config_["applications"][0]
    assert app["import_path"] == "services.ray_app.app:app_builder"
    args = serving.AppArgs.model_validate(app["args"])  # the args the cluster passes are ones the code accepts
    assert args.api_key_env == "WORKSHOP_SERVE_API_KEY" and "sk-" not in doc["spec"]["serveConfigV2"]
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {serving.Embedder.name, serving.ChatModel.name, serving.OpenAIIngress.name}
    scaling = deployments["Embedder"]["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"] and scaling["target_ongoing_requests"] > 0
    assert isinstance(deployments["Embedder"]["ray_actor_options"]["num_cpus"], int)
    for where, spec in manifests.pod_specs(doc):
        assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "graviton", "kubernetes.io/arch": "arm64"}, where
        container = spec["containers"][0]
        assert container["readinessProbe"] and container["resources"]["limits"]["memory"]
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["WORKSHOP_SERVE_API_KEY"]["valueFrom"]
        assert "OMP_NUM_THREADS" not in env
    gateway = manifests.chapter_parameters("04-gateway") if (manifests.MANIFESTS_DIR / "04-gateway").exists() else {}
    expected = (gateway.get("routes") or {}).get("embedding", {}).get("eks_service", "ray-serve-serve-svc")
    assert doc["spec"]["serveService"]["metadata"]["name"] == expected


def test_app_builder_binds_three_deployments_without_a_cluster(isolated_settings: Settings) -> None:
    from ray.serve.deployment import Application

    from services.ray_app.app import app_builder

    assert isinstance(app_builder(local_app_args(isolated_settings)), Application)
    assert isinstance(app_builder({**local_app_args(isolated_settings), "chat_model_path": None}), Application)
