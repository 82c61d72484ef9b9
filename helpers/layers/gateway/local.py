"""Chapter 04 on this machine: the LiteLLM proxy from its own venv (.venvs/litellm) and its Redis response cache.

The proxy's environment is its own (requirements/litellm.txt): LiteLLM's proxy needs mcp>=2.3 and rich<14, which
the agent's packages cannot share. helpers.local.services starts both as the stack's `gateway` and `redis`.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from helpers.config import ROOT, Settings
from helpers.errors import WorkshopError
from helpers.layers.gateway.config import config_text

WARM_UP_ROUNDS = 3  # requests per route: LiteLLM's first-use work is done after the first; two more settle it
HOOKS_FILE = ROOT / "services" / "gateway" / "gateway_hooks.py"  # the PII guardrail and key check the proxy loads
PROXY_VENV = ROOT / ".venvs" / "litellm"
INSTALL_COMMANDS = (
    "make gateway-env  (that is: python3.11 -m venv .venvs/litellm && .venvs/litellm/bin/pip install pip==25.3 && "
    ".venvs/litellm/bin/pip install -r requirements/litellm.txt)"
)


class GatewayError(WorkshopError):
    """The gateway cannot be set up or reached; the message says what to do."""


def proxy_installed() -> bool:
    """Whether the gateway's own environment (.venvs/litellm) exists."""
    return (PROXY_VENV / "bin" / "litellm").exists()


def config_path(settings: Settings) -> Path:
    """Where the local proxy's config.yaml is written (the state folder; it holds no secret)."""
    return settings.state_dir / "config" / "gateway" / "config.yaml"


def write_local_config(settings: Settings) -> Path:
    """Write the local config.yaml and the hooks it loads into the state folder; return the config's path."""
    from helpers.target import Target

    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOOKS_FILE, path.parent / HOOKS_FILE.name)
    path.write_text(config_text(Target("local", settings)))
    return path


def gateway_command(settings: Settings) -> list[str]:
    """Command line of the local LiteLLM proxy (writes its config first)."""
    if not proxy_installed():
        raise GatewayError(f"The gateway's environment {PROXY_VENV} does not exist.",
                           f"Create it with:\n  {INSTALL_COMMANDS}\n(from {ROOT}), then re-run.")
    return [str(PROXY_VENV / "bin" / "litellm"), "--config", str(write_local_config(settings)),
            "--host", settings.host, "--port", str(settings.gateway_port), "--num_workers", "1"]


def gateway_environment(settings: Settings) -> dict[str, str]:
    """The proxy's environment: the keys it needs (never in its config file), no telemetry, no price download."""
    from helpers.layers.observability import tracing

    if settings.gateway_master_key is None:
        raise GatewayError("No gateway master key in the settings.",
                           "Run `python -m helpers.local.doctor` to generate the workshop secrets into .env, then re-run.")
    traced = config_has_tracing(settings)  # the stack writes the config (gateway_command) before this runs
    return {
        **(tracing.gateway_environment(settings) if traced else {}),  # chapter 05: where spans go
        "LITELLM_MASTER_KEY": settings.gateway_master_key.get_secret_value(),
        "MODEL_SERVER_API_KEY": _secret(settings.model_server_api_key),
        "EMBEDDING_API_KEY": _secret(settings.serve_api_key),  # the Ray Serve app's bearer key
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # use the price list shipped in the package, do not download one
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def warm_up(settings: Settings) -> list[str]:
    """A few requests through each route right after the proxy answers, before the stack calls it healthy.

    LiteLLM imports about 80 modules on the first request it serves (the MCP server manager, its auth hooks,
    loggers: about 90 ms here), so without this a learner's first request pays ~100 ms more than the next ones.
    The warm-up bypasses the response cache, stores nothing in it, and is not logged (`no-log`: no trace of it in
    the trace store). Returns the problems (empty when warm); the stack writes them to the gateway's log, and a
    failed warm-up does not fail the start.
    """
    import httpx

    key = settings.gateway_master_key.get_secret_value() if settings.gateway_master_key else ""
    base = f"http://{settings.host}:{settings.gateway_port}/v1"
    bypass = {"cache": {"no-cache": True, "no-store": True}, "no-log": True}
    requests = (("/chat/completions", {"model": settings.served_chat_model, "max_tokens": 1, "temperature": 0,
                                       "messages": [{"role": "user", "content": "Say OK."}], **bypass}),
                ("/embeddings", {"model": settings.served_embedding_model, "input": ["warm-up"], **bypass}))
    problems = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120, trust_env=False) as client:
        for path, body in requests:
            for _ in range(WARM_UP_ROUNDS):
                try:
                    reply = client.post(base + path, json=body)
                except httpx.HTTPError as exc:
                    problems.append(f"{path}: {type(exc).__name__}: {exc}")
                    break
                if reply.status_code != 200:
                    problems.append(f"{path}: HTTP {reply.status_code}: {reply.text[:200]}")
                    break
    return problems


def config_has_tracing(settings: Settings) -> bool:
    """Whether the local config on disk (what the proxy loads) switches tracing on."""
    import yaml

    path = config_path(settings)
    if not path.exists():
        return False
    return bool((yaml.safe_load(path.read_text()).get("litellm_settings") or {}).get("callbacks"))


def _secret(value: object) -> str:
    return value.get_secret_value() if value is not None else ""  # type: ignore[attr-defined]


def redis_command(settings: Settings) -> list[str]:
    """Command line of the local Redis: loopback only, no persistence, no password (nothing leaves the machine)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise GatewayError("redis-server is not installed; without it the gateway uses its in-memory cache.",
                           "On Debian/Ubuntu: `sudo apt-get install redis-server`; on macOS: `brew install redis`.")
    return [binary, "--bind", settings.host, "--port", str(settings.redis_port), "--save", "", "--appendonly", "no",
            "--protected-mode", "yes", "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"]


def redis_ping(settings: Settings) -> bool:
    """True when the local Redis answers PING with PONG."""
    try:
        with socket.create_connection((settings.host, settings.redis_port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
