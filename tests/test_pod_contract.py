"""The pod contract (issue 12, defects 3 and 4): the agent API run the way its EKS pod runs it, against the local stack.

What the pod gives the program, and how this test gives the same:
- the image's files only, read-only (readOnlyRootFilesystem): the files the Dockerfile COPYs into /app, byte-compiled
  as its build does, copied to a folder and `chmod -R a-w`;
- uid/gid 10001 (runAsUser), so write protection really applies: the process is started as 10001 (this test runs
  as root); HOME=/nonexistent, the home of the image's user, which does not exist;
- only the Deployment's environment: read from the rendered manifests/08-supervisor-agent Deployment, secretKeyRef
  values filled from test values, plus the image's ENV lines and what the runtime adds (HOME, HOSTNAME, the
  Kubernetes service variables, EKS Pod Identity's AWS_CONTAINER_CREDENTIALS_FULL_URI and token file). Only the
  addresses of in-cluster Services are replaced by the local stand-ins' URLs, and the state emptyDir's mount path by
  a writable folder (the pod's /tmp emptyDir is this machine's /tmp);
- only the image's packages: the lock the Dockerfile installs (requirements/workshop.txt) without llama-cpp-python,
  as a site-packages view of the dev venv with everything else left out, so `import llama_cpp` fails the way a
  missing package does; a hard-linked copy of this machine's Python (its home is not readable by uid 10001);
- the knowledge base in OpenSearch, signed with SigV4 with Pod Identity credentials: a loopback k-NN stand-in
  (FakeOpenSearch: exact cosine search, the requests the store sends) and a loopback Pod Identity agent;
- the gateway (LiteLLM, with the local model server and the Ray Serve app behind it) and both MCP servers: the local
  stack (helpers.local.stack), in an isolated state folder on free ports.

Then /health, /ingest (the whole knowledge base) and /query, as the Ingress would send them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import config
from helpers.config import ROOT
from tests.conftest import free_port

POD_UID = 10001
IMAGE_DIR = ROOT / "manifests" / "08-supervisor-agent" / "image"
DOCKERFILE = IMAGE_DIR / "Dockerfile"
LOCK = ROOT / "requirements" / "workshop.txt"
LEFT_OUT = {"llama-cpp-python"}  # no wheels on PyPI: the image cannot have it (the Dockerfile's comment says so)
REGION = "eu-central-1"  # not the settings' default (us-west-2): a pod that ignores its region signs wrongly
AGENT_KEY = "sk-agent-pod-contract"
POD_IDENTITY_TOKEN = "pod-identity-token-for-the-test"
ACCESS_KEY, SESSION_TOKEN = "ASIAPODIDENTITYTEST", "session-token-from-pod-identity"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- what the image holds (from its Dockerfile)


def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


def image_requirements() -> set[str]:
    """The distributions the image installs: the lock, filtered by the Dockerfile's own `grep -v -E` pattern."""
    match = re.search(r"grep -v -E '([^']+)' /opt/workshop\.txt", dockerfile_text())
    assert match, "the Dockerfile no longer filters the lock with grep -v -E '<pattern>': update this test"
    pattern = re.compile(match.group(1))
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {normalise(re.split(r"[\[=<>]", line, maxsplit=1)[0]) for line in lines if not pattern.search(line)}


def image_env() -> dict[str, str]:
    """The ENV lines of the Dockerfile (KEY=value pairs, continued lines joined)."""
    text = dockerfile_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in line[4:].split()))
    return env


def image_home() -> str:
    """The home directory of the image's user (useradd --home-dir)."""
    match = re.search(r"--home-dir (\S+)", dockerfile_text())
    assert match, "the Dockerfile's useradd has no --home-dir"
    return match.group(1)


def image_copies() -> list[str]:
    """The repository paths the Dockerfile COPYs into the app folder (not the lock)."""
    return [m.group(1).rstrip("/") for m in re.finditer(r"^COPY (\S+) \S+$", dockerfile_text(), re.M)
            if not m.group(1).startswith("requirements/")]


def test_the_image_leaves_llama_cpp_python_out() -> None:
    """The Dockerfile's filter must match the lock's line for llama-cpp-python (it carries an extra: [server])."""
    assert not image_requirements() & LEFT_OUT, (
        f"the Dockerfile's grep pattern keeps {sorted(image_requirements() & LEFT_OUT)} from {LOCK.name}: "
        "`pip install --only-binary=:all:` would then fail the build (no wheels on PyPI)")


# ---------------------------------------------------------------- the pod's filesystem: Python, packages, /app


def site_packages() -> Path:
    return Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def package_view(target: Path, keep: set[str]) -> list[str]:
    """A site-packages of symlinks to the dev venv's entries that belong to the distributions in `keep` (and pip,
    setuptools, wheel, which the base image has); returns the distributions left out."""
    from importlib import metadata

    source = site_packages()
    owner: dict[str, set[str]] = {}
    left_out = []
    for dist in metadata.distributions(path=[str(source)]):
        name = normalise(dist.metadata["Name"])
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        tops.add(Path(str(dist._path)).name)  # type: ignore[attr-defined] - the .dist-info folder
        for top in tops:
            owner.setdefault(top, set()).add(name)
        if name not in keep and name not in {"pip", "setuptools", "wheel"}:
            left_out.append(name)
    target.mkdir(parents=True)
    for entry in source.iterdir():
        owners = owner.get(entry.name, set())
        if entry.suffix == ".pth" or not owners or not owners & (keep | {"pip", "setuptools", "wheel"}):
            continue  # not the image's (the editable install's finder, coverage's hook, llama_cpp, ...)
        (target / entry.name).symlink_to(entry)
    return sorted(left_out)


def pod_python(root: Path, keep: set[str]) -> tuple[Path, dict[str, str], list[str]]:
    """A Python uid 10001 can run with only the image's packages: the interpreter and standard library hard-linked
    out of this machine's Python home, and a venv whose site-packages is package_view(). Returns the executable,
    the variable the interpreter copy needs (LD_LIBRARY_PATH: the binary's RUNPATH is the original home), and the
    distributions left out."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    home = root / "python"
    (home / "bin").mkdir(parents=True)
    os.link(Path(sys.base_prefix) / "bin" / version, home / "bin" / version)
    (home / "lib").mkdir()
    for lib in (base / "lib").glob("libpython*"):
        os.link(lib, home / "lib" / lib.name, follow_symlinks=False)
    shutil.copytree(base / "lib" / version, home / "lib" / version, copy_function=os.link, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "__pycache__", "test", "idlelib", "tkinter"))
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {home / 'bin'}\ninclude-system-site-packages = false\n"
                                     f"version = {'.'.join(map(str, sys.version_info[:3]))}\n")
    (venv / "bin" / "python").symlink_to(home / "bin" / version)
    left_out = package_view(venv / "lib" / version / "site-packages", keep)
    return venv / "bin" / "python", {"LD_LIBRARY_PATH": str(home / "lib")}, left_out


def app_copy(root: Path) -> Path:
    """/app: what the Dockerfile copies (minus what its .dockerignore drops), byte-compiled, then read-only."""
    app = root / "app"
    app.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for relative in image_copies():
        source, dest = ROOT / relative, app / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=ignore)
        else:
            shutil.copy2(source, dest)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "helpers", "services"], cwd=app, check=True)
    for path in [app, *app.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # chmod -R a-w
    return app


def digest(folder: Path) -> str:
    """A fingerprint of every file and folder under a path (names, modes, contents)."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(f"{path.relative_to(folder)} {oct(path.stat().st_mode)}\n".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- AWS stand-ins: Pod Identity and OpenSearch k-NN


@dataclass
class Signed:
    """One OpenSearch request: what was asked, and who signed it for which region."""

    method: str
    path: str
    authorization: str
    security_token: str | None

    @property
    def scope(self) -> tuple[str, ...]:
        """(access key, date, region, service, "aws4_request") of the SigV4 credential scope ('' when unsigned)."""
        match = re.search(r"Credential=([^,\s]+)", self.authorization)
        return tuple(match.group(1).split("/")) if match else ()


@dataclass
class FakeOpenSearch:
    """The OpenSearch API the workshop's store uses, in memory: index create/exists/mapping, bulk, exact cosine k-NN
    with term filters, terms aggregation, count, refresh. Records every request with its signature."""

    indices: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"mappings":..., "docs": {id: src}}
    requests: list[Signed] = field(default_factory=list)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == ["_bulk"]:
            return 200, self.bulk(body)
        if not parts:
            return 200, {"version": {"number": "2.19.0", "distribution": "opensearch"}}
        index = self.indices.get(parts[0])
        if len(parts) == 1:
            if method == "HEAD":
                return (200 if index else 404), None
            if method == "PUT":
                self.indices[parts[0]] = {**json.loads(body or b"{}"), "docs": {}}
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": parts[0]}
            if method == "DELETE":
                self.indices.pop(parts[0], None)
                return 200, {"acknowledged": True}
        if index is None:
            return 404, {"error": {"type": "index_not_found_exception"}, "status": 404}
        if parts[1] == "_mapping":
            return 200, {parts[0]: {"mappings": index["mappings"]}}
        if parts[1] == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if parts[1] == "_count":
            return 200, {"count": len(index["docs"])}
        if parts[1] == "_search":
            return 200, self.search(index, json.loads(body or b"{}"))
        return 400, {"error": f"not served by this stand-in: {method} {path}"}

    def bulk(self, body: bytes) -> dict[str, Any]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        items, i = [], 0
        while i < len(lines):
            (action, meta), = lines[i].items()
            docs = self.indices.setdefault(meta["_index"], {"mappings": {}, "docs": {}})["docs"]
            if action == "index":
                docs[meta["_id"]] = lines[i + 1]
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 201}})
                i += 2
            else:
                found = docs.pop(meta["_id"], None)
                items.append({action: {"_index": meta["_index"], "_id": meta["_id"], "status": 200 if found else 404}})
                i += 1
        return {"took": 1, "errors": False, "items": items}

    @staticmethod
    def matches(source: dict[str, Any], clause: dict[str, Any] | None) -> bool:
        for term in ((clause or {}).get("bool") or {}).get("filter") or []:
            (key, value), = term["term"].items()
            actual = source.get(key.removesuffix(".keyword"))
            if (value not in actual) if isinstance(actual, list) else (actual != value):
                return False
        return True

    def search(self, index: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        docs = index["docs"]
        query = body.get("query") or {"match_all": {}}
        if "knn" in query:
            (vector_field, knn), = query["knn"].items()
            q = knn["vector"]
            qn = math.sqrt(sum(x * x for x in q))
            scored = []
            for doc_id, src in docs.items():
                if not self.matches(src, knn.get("filter")):
                    continue
                v = src[vector_field]
                cos = sum(a * b for a, b in zip(q, v, strict=True)) / (qn * math.sqrt(sum(x * x for x in v)))
                scored.append(((1 + cos) / 2, doc_id, src))  # cosinesimil: (2 - (1 - cos)) / 2
            scored.sort(key=lambda s: -s[0])
            hits = [(score, i, s) for score, i, s in scored[:knn["k"]]]
        elif "term" in query:
            (key, value), = query["term"].items()
            hits = [(1.0, i, s) for i, s in docs.items() if s.get(key) == value]
        else:
            hits = [(1.0, i, s) for i, s in docs.items()]
        keep = body.get("_source", True)
        shown = [{"_index": "knowledge", "_id": i, "_score": score,
                  **({"_source": {k: s[k] for k in keep if k in s} if isinstance(keep, list) else s} if keep else {})}
                 for score, i, s in hits[:body.get("size", 10)]]
        answer: dict[str, Any] = {"took": 1, "timed_out": False,
                                  "hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": shown}}
        if "aggs" in body:
            (name, agg), = body["aggs"].items()
            counts: dict[str, int] = {}
            for s in docs.values():
                counts[s[agg["terms"]["field"]]] = counts.get(s[agg["terms"]["field"]], 0) + 1
            buckets = [{"key": k, "doc_count": n} for k, n in sorted(counts.items())]
            answer["aggregations"] = {name: {"buckets": buckets}}
        return answer


def serve(handler_for: Any) -> tuple[ThreadingHTTPServer, str]:
    """A loopback HTTP server whose every request goes to handler_for(method, path, headers, body)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            code, answer = handler_for(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------- the pod's environment, from the rendered Deployment


def rendered_container(opensearch_endpoint: str) -> dict[str, Any]:
    """The agent container of the eks Deployment, rendered for REGION with the given OpenSearch endpoint."""
    from helpers.layers.agent import deploy as agent_deploy
    from helpers.target import Target

    settings = config.Settings(_env_file=None, target="eks", aws_region=REGION)
    objects = agent_deploy.render(Target("eks", settings), registry="123456789012.dkr.ecr.eu-central-1.amazonaws.com",
                                  opensearch_endpoint=opensearch_endpoint)
    deployment = next(o.doc for o in objects if o.kind == "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == POD_UID
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    return container


def deployment_environment(container: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's env list, secretKeyRef values filled from `secrets` (any other source fails the test)."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"].get("secretKeyRef")
        assert ref, f"{item['name']}: a value source this test cannot fill ({item['valueFrom']})"
        env[item["name"]] = secrets[(ref["name"], ref["key"])]
    return env


@dataclass
class Pod:
    """The running agent process and what it talks to."""

    url: str
    env: dict[str, str]
    app: Path
    state: Path
    app_digest: str
    log: Path
    opensearch: FakeOpenSearch
    stack_settings: config.Settings
    left_out: list[str]
    proc: subprocess.Popen


def pod_identity_agent(token: str) -> Any:
    """The EKS Pod Identity agent's credentials endpoint: short-lived credentials for the bearer of the pod's token."""

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != token:
            return 401, {"message": "invalid token"}
        return 200, {"AccessKeyId": ACCESS_KEY, "SecretAccessKey": "secret", "Token": SESSION_TOKEN,
                     "AccountId": "123456789012", "Expiration": "2099-01-01T00:00:00Z"}

    return answer


def opensearch_handler(fake: FakeOpenSearch) -> Any:
    lock = threading.Lock()

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        with lock:
            fake.requests.append(Signed(method, path, headers.get("authorization", ""),
                                        headers.get("x-amz-security-token")))
            if not headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
                return 403, {"message": "missing authentication token"}
            return fake.handle(method, path, body)

    return answer


def start_pod(root: Path, stack_settings: config.Settings, opensearch_url: str, credentials_url: str) -> Pod:
    """Build the pod's filesystem and environment, and start the agent as uid 10001 with exactly that environment."""
    root.chmod(0o755)
    keep = image_requirements() - LEFT_OUT
    python, interpreter_env, left_out = pod_python(root, keep)
    app = app_copy(root)
    state = root / "state"  # the `state` emptyDir: writable by the pod's user only
    state.mkdir(mode=0o700)
    os.chown(state, POD_UID, POD_UID)
    token_file = root / "pod-identity-token"  # what the Pod Identity webhook mounts (readable by the pod)
    token_file.write_text(POD_IDENTITY_TOKEN)
    container = rendered_container(opensearch_url)
    from helpers.target import Target

    local = Target("local", stack_settings)
    secrets = {("supervisor-agent-keys", "WORKSHOP_AGENT_API_KEY"): AGENT_KEY,
               ("agent-gateway-key", "LITELLM_API_KEY"): stack_settings.gateway_master_key.get_secret_value()}
    env = deployment_environment(container, secrets)
    in_cluster = {"WORKSHOP_GATEWAY_URL": local.gateway.base_url,
                  "WORKSHOP_MCP_WEB_SEARCH_URL": local.mcp_url("web-search"),
                  "WORKSHOP_MCP_FILESYSTEM_URL": local.mcp_url("filesystem")}
    for name, url in in_cluster.items():
        assert re.match(r"http://[a-z0-9-]+(\.[a-z0-9-]+)*:\d+/", env[name]), (name, env[name])  # a Service name
        env[name] = url
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "state")
    assert env["WORKSHOP_STATE_DIR"] == mount
    env["WORKSHOP_STATE_DIR"] = str(state)
    port = free_port()
    command = list(container["command"])
    assert command[:3] == ["python", "-m", "services.agent_api.app"], command
    command[0] = str(python)
    command[command.index("--host") + 1] = "127.0.0.1"  # the pod listens on 0.0.0.0; this test on loopback only
    command[command.index("--port") + 1] = str(port)
    full_env = {
        **image_env(),
        "PATH": f"{python.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",  # the python base image's
        "HOME": image_home(),  # the image's user's home, which does not exist
        "HOSTNAME": "supervisor-agent-7d9c8b6f5-x2x7q",
        "KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{credentials_url}/v1/credentials",  # EKS Pod Identity
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        **interpreter_env,
        **env,
    }
    log = root / "pod.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=app, env=full_env, user=POD_UID, group=POD_UID, extra_groups=[],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the agent did not start in its pod environment:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    return Pod(url, full_env, app, state, digest(app), log, FakeOpenSearch(), stack_settings, left_out, proc)


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    """The local stack (gateway with the model server and Ray Serve, both MCP servers) and the agent in its pod."""
    from helpers.layers import gateway
    from helpers.local import stack

    if os.geteuid() != 0:
        pytest.skip("starting the agent as uid 10001 needs root")
    if not gateway.proxy_installed():
        pytest.skip("the gateway's environment .venvs/litellm does not exist (make gateway-env)")
    # not under pytest's base temp folder: it is private to root (0700), and uid 10001 must reach the pod's files
    root = Path(tempfile.mkdtemp(prefix="pod-contract-"))
    opensearch = FakeOpenSearch()
    servers = [serve(opensearch_handler(opensearch)), serve(pod_identity_agent(POD_IDENTITY_TOKEN))]
    (_, opensearch_url), (_, credentials_url) = servers
    proc = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKSHOP_STATE_DIR", str(root / "stack-state"))
        for field_name in config.Settings.model_fields:
            if field_name.endswith("_port"):
                mp.setenv(f"WORKSHOP_{field_name.upper()}", str(free_port()))
        settings = config.reload_settings()
        try:
            for service in ("gateway", "mcp-web-search", "mcp-filesystem"):
                stack.ensure(service)
            running = start_pod(root, settings, opensearch_url, credentials_url)
            proc = running.proc
            running.opensearch = opensearch
            yield running
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            stack.down()
            for server, _ in servers:
                server.shutdown()
                server.server_close()
            for path in [root / "app", *(root / "app").rglob("*")] if (root / "app").exists() else []:
                path.chmod(path.stat().st_mode | 0o200)  # the read-only copy, writable again to be removed
            shutil.rmtree(root, ignore_errors=True)  # (python/ holds hard links into this machine's Python home)
    config.reload_settings()


def pod_log(pod: Pod) -> str:
    """The end of the pod's log (after a moment: uvicorn logs a 500's traceback after sending the response)."""
    time.sleep(1)
    return pod.log.read_text()[-6000:]


def post(pod: Pod, route: str, body: dict[str, Any], timeout: float = 600) -> httpx.Response:
    return httpx.post(f"{pod.url}{route}", json=body, headers={"Authorization": f"Bearer {AGENT_KEY}"},
                      timeout=timeout)


# ---------------------------------------------------------------- the contract


@pytest.mark.services
def test_the_pod_has_only_the_image_packages_and_no_writable_home(pod: Pod) -> None:
    assert "llama-cpp-python" in pod.left_out
    probe = subprocess.run(
        [pod.env["PATH"].split(":")[0] + "/python", "-c",
         "import importlib.util, os, sys; print(importlib.util.find_spec('llama_cpp') is None, "
         "os.access(os.path.expanduser('~'), os.W_OK), os.access('.', os.W_OK), os.geteuid())"],
        cwd=pod.app, env=pod.env, user=POD_UID, group=POD_UID, extra_groups=[], capture_output=True, text=True,
        check=True)
    assert probe.stdout.split() == ["True", "False", "False", str(POD_UID)], probe.stderr


@pytest.mark.services
def test_settings_load_in_the_pod_without_writing(pod: Pod) -> None:
    """Defect 3: get_settings() in the pod reads the environment and writes nothing (it used to append to /app/.env)."""
    probe = subprocess.run(
        [pod.env["PATH"].split(":")[0] + "/python", "-c",
         "from helpers.config import get_settings; s = get_settings(); "
         "print(s.target, s.agent_api_key is not None, s.gateway_master_key is None)"],
        cwd=pod.app, env=pod.env, user=POD_UID, group=POD_UID, extra_groups=[], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split() == ["eks", "True", "True"]


@pytest.mark.services
def test_the_agent_ingests_and_answers_in_its_pod(pod: Pod) -> None:
    from helpers.layers.rag import knowledge

    assert httpx.get(f"{pod.url}/health", timeout=5).json() == {"status": "ok"}
    ingested = post(pod, "/ingest", {})
    assert ingested.status_code == 200, f"{ingested.text}\n--- pod log:\n{pod_log(pod)}"
    counter = knowledge.token_counter()
    expected = {c.id for d in knowledge.load_documents() for c in knowledge.chunk_document(d, counter)}
    docs = pod.opensearch.indices["knowledge"]["docs"]
    assert set(docs) == expected  # the whole knowledge base, chunked exactly as on the laptop
    assert {d["source"] for d in docs.values()} == {d.source for d in knowledge.load_documents()}

    # routing "code" (a field of the request, not of the pod): the eks default lets the model route through
    # sub-agents, which expects the cluster's 14B model; the local 0.5B model needs many minutes for it
    answer = post(pod, "/query", {"question": "Why is my GPU pod stuck in Pending?", "routing": "code"})
    assert answer.status_code == 200, f"{answer.text}\n--- pod log:\n{pod_log(pod)}"
    body = answer.json()
    assert body["answer"].strip() and body["route"] in ("knowledge_base", "web_search")
    if body["route"] == "knowledge_base":
        assert {s["source"] for s in body["sources"]} <= {d["source"] for d in docs.values()}
    searches = [r for r in pod.opensearch.requests if r.path.split("?")[0].endswith("/_search")]
    assert searches, "the query never searched the knowledge base"


@pytest.mark.services
def test_every_opensearch_request_is_signed_with_pod_identity(pod: Pod) -> None:
    assert pod.opensearch.requests
    assert {r.security_token for r in pod.opensearch.requests} == {SESSION_TOKEN}
    assert {(r.scope[0], r.scope[3]) for r in pod.opensearch.requests} == {(ACCESS_KEY, "es")}


@pytest.mark.services
def test_opensearch_requests_are_signed_for_the_rendered_region(pod: Pod) -> None:
    """Defect 9 from the pod's side: the Deployment renders the chosen region and the pod signs for it (a domain in
    eu-central-1 answers 403 to a request signed for us-west-2)."""
    regions = {r.scope[2] for r in pod.opensearch.requests}
    rendered = {k: v for k, v in pod.env.items() if k in ("WORKSHOP_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")}
    assert regions == {REGION}, (f"the pod signed its OpenSearch requests for {sorted(regions)}, the cluster is in "
                                 f"{REGION}; the Deployment sets {rendered} but the workshop's settings read "
                                 "WORKSHOP_AWS_REGION (Settings.aws_region)")


@pytest.mark.services
def test_the_pod_wrote_only_to_its_state_folder(pod: Pod) -> None:
    assert digest(pod.app) == pod.app_digest  # nothing created or changed under /app (it is read-only anyway)
    home = Path(pod.env["HOME"])  # does not exist in the image; uid 10001 cannot create it here either
    assert not home.exists() or not [p for p in (home, *home.rglob("*")) if p.stat().st_uid == POD_UID]
    log = pod.log.read_text()
    assert "Traceback" not in log and "PermissionError" not in log, log[-4000:]
    assert not (pod.app / ".env").exists()
