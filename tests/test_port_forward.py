"""helpers.infra.k8s.port_forward against a fake `kubectl` on PATH that listens on the forwarded port, as the real
one does: the with-block gets a working base URL, the subprocess never outlives the block, and a missing or failing
kubectl is a WorkshopError with the fix."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import requests

from helpers.errors import WorkshopError
from helpers.infra.k8s import port_forward as forwarding

FAKE_KUBECTL = """#!{python}
# A stand-in for `kubectl port-forward svc/NAME LOCAL:PORT -n NS ...`: records its argv and pid, then serves HTTP
# on 127.0.0.1:LOCAL, answering every GET with the service it pretends to forward to.
import http.server, json, os, sys, time
args = sys.argv[1:]
with open({record!r}, "w") as fh:
    json.dump({{"argv": args, "pid": os.getpid()}}, fh)
if {fail!r}:
    print('Error from server (NotFound): services "missing" not found', file=sys.stderr)
    sys.exit(1)
time.sleep({delay!r})  # kubectl needs a moment to reach the API server before it listens
local = int(args[2].split(":")[0])
service = args[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"forwarded_to": service, "path": self.path,
                           "authorization": self.headers.get("authorization")}}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.HTTPServer(("127.0.0.1", local), Handler).serve_forever()
"""


def fake_kubectl(folder: Path, fail: bool = False, delay: float = 0.3) -> Path:
    """Write the fake kubectl into `folder` (to put on PATH); returns the file its argv and pid are recorded in."""
    record = folder / "kubectl-call.json"
    script = folder / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable, record=str(record), fail=fail, delay=delay))
    script.chmod(0o755)
    return record


def alive(pid: int) -> bool:
    """Whether a process with this pid still exists (a reaped child does not)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def kubectl_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_the_block_gets_the_forwarded_url_and_the_process_is_stopped(kubectl_on_path: Path) -> None:
    record = fake_kubectl(kubectl_on_path)
    with forwarding.port_forward("vllm-reasoning", 8000, "llm-workshop") as base:
        answer = requests.get(base + "/v1/models", headers={"Authorization": "Bearer the-key"}, timeout=5).json()
        call = json.loads(record.read_text())
        assert alive(call["pid"])
    assert answer == {"forwarded_to": "svc/vllm-reasoning", "path": "/v1/models", "authorization": "Bearer the-key"}
    local = int(base.rsplit(":", 1)[1])
    assert call["argv"] == ["port-forward", "svc/vllm-reasoning", f"{local}:8000", "-n", "llm-workshop",
                            "--address", "127.0.0.1"]
    assert not alive(call["pid"]), "the kubectl subprocess outlived the with-block"
    assert not forwarding.port_answers(local)


def test_the_process_is_stopped_when_the_block_raises(kubectl_on_path: Path) -> None:
    record = fake_kubectl(kubectl_on_path)
    with pytest.raises(RuntimeError, match="inside the block"):
        with forwarding.port_forward("litellm", 4000, "llm-workshop", local_port=forwarding.free_local_port()):
            raise RuntimeError("inside the block")
    assert not alive(json.loads(record.read_text())["pid"])


def test_a_failing_kubectl_is_reported_with_its_message(kubectl_on_path: Path) -> None:
    fake_kubectl(kubectl_on_path, fail=True)
    with pytest.raises(WorkshopError) as error:
        with forwarding.port_forward("missing", 8000, "llm-workshop"):
            pytest.fail("the block must not run")
    assert "exited with code 1" in error.value.message and 'services "missing" not found' in error.value.message
    assert "kubectl get svc,pods" in (error.value.fix or "")


def test_a_forward_that_never_listens_times_out_and_is_stopped(kubectl_on_path: Path) -> None:
    record = fake_kubectl(kubectl_on_path, delay=30)
    start = time.monotonic()
    with pytest.raises(WorkshopError, match="did not open 127.0.0.1"):
        with forwarding.port_forward("vllm-reasoning", 8000, "llm-workshop", timeout=1.0):
            pytest.fail("the block must not run")
    assert time.monotonic() - start < 10
    assert not alive(json.loads(record.read_text())["pid"])


def test_no_kubectl_is_a_workshop_error_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no kubectl anywhere on PATH
    monkeypatch.setattr(forwarding, "KUBECTL_FALLBACK", tmp_path / "no-such-kubectl")
    with pytest.raises(WorkshopError) as error:
        with forwarding.port_forward("vllm-reasoning", 8000, "llm-workshop"):
            pytest.fail("the block must not run")
    assert "kubectl is not installed" in error.value.message
    assert "https://kubernetes.io/docs/tasks/tools/" in error.value.fix and "make helm" in error.value.fix


def test_vllm_port_forward_targets_the_servers_service(kubectl_on_path: Path) -> None:
    from helpers.layers.vllm import deploy as vllm_deploy

    record = fake_kubectl(kubectl_on_path)
    with vllm_deploy.port_forward("reasoning", "llm-workshop") as base:
        assert requests.get(base + "/health", timeout=5).json()["forwarded_to"] == "svc/vllm-reasoning"
    assert json.loads(record.read_text())["argv"][2].endswith(f":{vllm_deploy.SERVER_PORT}")
