"""Chapter 03 on this machine: the arguments, resources and command of the Ray Serve app under a local Ray.

The app itself is a program (services/ray_app/app.py, the same code KubeRay runs on EKS); its local launcher
(services/ray_app/local_launcher.py) is what the stack's `ray-serve` service runs. This module holds what the
library decides for them: model files and served names, logical CPUs, Ray's environment, its temporary folder.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.config import ROOT, Settings, get_settings

if TYPE_CHECKING:
    from helpers.target import Target

OBJECT_STORE_BYTES = 200 * 1024 * 1024  # Ray's default is ~30% of RAM in /dev/shm; 200 MB is plenty here
SOCKET_PATH_LIMIT = 107  # AF_UNIX path limit; Ray puts sockets at <temp>/session_<date>_<pid>/sockets/...
SESSION_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
APP_NAME = "workshop"  # the Serve application name on the laptop (the RayService uses the same)
RAY_START_ATTEMPTS = 3
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}  # errors still reach the service log

# Laptop autoscaling: the same fields as on EKS, tuned so a notebook sees a scale-up within seconds.
LOCAL_EMBEDDING_AUTOSCALING: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 2,
    "upscale_delay_s": 2.0,
    "downscale_delay_s": 8.0,
    "look_back_period_s": 5.0,
    "metrics_interval_s": 1.0,
}


def ray_temp_dir(settings: Settings) -> Path:
    """Ray's temporary folder: inside the state folder, or a short /tmp folder when that path is too long for sockets."""
    preferred = settings.state_dir.resolve() / "ray"
    if len(str(preferred)) + SESSION_SUFFIX <= SOCKET_PATH_LIMIT:
        return preferred
    tag = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"llm-workshop-ray-{tag}"


def ray_cpus(args: dict[str, Any]) -> int:
    """Logical CPUs the local Ray offers: room for every Embedder replica autoscaling may start, plus a chat replica.

    Ray schedules by these logical numbers; on a 2-core laptop the 1-CPU replicas then share the cores. On EKS
    each logical CPU is a vCPU the Ray pod requested from Kubernetes. Locally the chat route forwards to the
    llama.cpp server (no ChatModel replica), so only the Embedder replicas count.
    """
    embed = args["embedding_cpus"] * args["embedding_autoscaling"].get("max_replicas", 1)
    chat = args["chat_cpus"] if args.get("chat_model_path") else 0
    return max(1, math.ceil(embed + chat))


CHAT_UPSTREAM_KEY_ENV = "WORKSHOP_CHAT_UPSTREAM_API_KEY"  # the llama.cpp server's key, for the chat route
WITHOUT_PANDAS = ROOT / "services" / "ray_app" / "without_pandas"  # see its pandas/__init__.py


def ray_python_path() -> str:
    """PYTHONPATH of the local Ray's processes: pandas kept out (Ray Serve imports it when installed; ~65 MB each)."""
    return os.pathsep.join(p for p in (str(WITHOUT_PANDAS), os.environ.get("PYTHONPATH", "")) if p)


def ray_environment(api_key: str, chat_upstream_key: str = "") -> dict[str, str]:
    """Environment for the local Ray and every worker it starts (inherited from this process)."""
    return {
        # Ray picks the machine's external address unless clustering is off; off means "loopback only".
        # (The variable's name says Windows/macOS, but on Linux it only switches address selection.)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Token auth stays on, with a throw-away token that lives only in this process tree
        # (Ray would otherwise write ~/.ray/auth_token).
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        # Replica gRPC servers on 127.0.0.1 too (see services.ray_app.app.bind_replica_servers_to_loopback).
        "WORKSHOP_SERVE_LOOPBACK_ONLY": "1",
        # Autoscaling metrics every second (default 10 s) so a notebook sees scaling within seconds.
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
        "RAY_USAGE_STATS_ENABLED": "0",  # no usage report upload attempts
        # The app reads its bearer key from here (services.ray_app.app.API_KEY_ENV).
        "WORKSHOP_SERVE_API_KEY": api_key,
        # The chat route forwards to the llama.cpp server with that server's key (AppArgs.chat_upstream_key_env).
        CHAT_UPSTREAM_KEY_ENV: chat_upstream_key,
        "NO_PROXY": ",".join(p for p in (os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost") if p),  # loopback
        # Ray's dashboard agent samples every process's CPU and memory every 5 s by default; 10 s is plenty here.
        "REPORTER_UPDATE_INTERVAL_MS": "10000",
        # Ray's processes hand their metrics (the ray_serve_* series) to the metrics port every 10 s by default;
        # every 2 s, notebook 05 can plot a few seconds of load the way Grafana's panels will show it on EKS.
        "RAY_metrics_report_interval_ms": "2000",
        "PYTHONPATH": ray_python_path(),
    }


def launch_command(settings: Settings) -> list[str]:
    """The argv of the stack's `ray-serve` service (fetches and verifies the models first)."""
    from helpers.layers.models import fetch

    fetch(settings.embedding_model)  # fail here, with the model's own message, rather than inside Ray
    return [sys.executable, "-m", "services.ray_app.local_launcher"]


def local_app_args(settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Arguments for the laptop: the verified embedding model, the workshop's served names, and the chat route
    forwarded to the stack's llama.cpp server (the `model-server` service) instead of a second chat model in Ray."""
    from helpers.layers.models import fetch

    settings = settings or get_settings()
    args: dict[str, Any] = {
        "embedding_model_path": str(fetch(settings.embedding_model)),
        "embedding_model_name": settings.served_embedding_model,
        "chat_model_name": settings.served_chat_model,
        "chat_upstream_url": settings.model_server_url,
        "chat_upstream_key_env": CHAT_UPSTREAM_KEY_ENV,
        "embedding_cpus": 1,
        "embedding_autoscaling": dict(LOCAL_EMBEDDING_AUTOSCALING),
    }
    args.update(overrides)
    return args  # the launcher validates them with the app's own AppArgs


def app_stats(t: Target, timeout: float = 30.0) -> dict[str, Any]:
    """The local app's /stats (embedding batches, replicas per deployment, requests in flight), with its own key."""
    import httpx

    base = t.embeddings.base_url.removesuffix("/v1")
    reply = httpx.get(f"{base}/stats", headers={"Authorization": f"Bearer {t.embeddings.key()}"}, timeout=timeout)
    reply.raise_for_status()
    return reply.json()
