"""`kubectl port-forward` for the length of a with-block (the Python client has no port-forward of its own)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers.config import ROOT
from helpers.errors import WorkshopError

KUBECTL_FALLBACK = ROOT / ".venvs" / "bin" / "kubectl"  # where `make helm` puts a pinned kubectl
KUBECTL_FIX = ("Install kubectl (https://kubernetes.io/docs/tasks/tools/) so it is on your PATH; on x86_64 Linux "
               "`make helm` puts a pinned one into .venvs/bin, which the workshop also finds.")


def kubectl_binary() -> str:
    """The kubectl to run: the one on PATH, else the pinned one `make helm` installs; WorkshopError when neither."""
    found = shutil.which("kubectl") or (str(KUBECTL_FALLBACK) if os.access(KUBECTL_FALLBACK, os.X_OK) else None)
    if found is None:
        raise WorkshopError("kubectl is not installed: a port-forward needs it (the Python client has none).",
                            KUBECTL_FIX)
    return found


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def port_forward(service: str, port: int, namespace: str, local_port: int | None = None,
                 timeout: float = 30.0) -> Iterator[str]:
    """`kubectl port-forward svc/NAME LOCAL:PORT -n NS` for the length of a with-block; yields http://127.0.0.1:LOCAL.

    A port-forward reaches the pod through the API server and the kubelet, so a NetworkPolicy that admits only
    some pods does not stop it, and the request keeps its own `Authorization` header (the API server's service
    proxy takes that header for the cluster's authentication). The subprocess is stopped when the block ends,
    whatever happens in it; WorkshopError (with kubectl's own message) when the forward does not come up."""
    local_port = local_port or free_local_port()
    command = [kubectl_binary(), "port-forward", f"svc/{service}", f"{local_port}:{port}", "-n", namespace,
               "--address", "127.0.0.1"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_forward(process, local_port, timeout, log)
            yield f"http://127.0.0.1:{local_port}"
        finally:
            stop_process(process)


def wait_for_forward(process: subprocess.Popen, local_port: int, timeout: float, log: Any) -> None:
    """Wait until the forwarded local port accepts connections; WorkshopError if kubectl exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not port_answers(local_port):
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            said = log.read().decode(errors="replace").strip() or "(no output)"
            why = f"exited with code {process.returncode}" if process.poll() is not None else \
                f"did not open 127.0.0.1:{local_port} within {timeout:g} s"
            raise WorkshopError(f"`{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(process.args))}` "
                                f"{why}: {said}",
                                "Check that the Service exists and has a ready pod (`kubectl get svc,pods -n "
                                "<namespace>`) and that kubectl uses the workshop cluster (`kubectl config "
                                "current-context`).")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate a subprocess, kill it if it does not exit within `grace` seconds, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
