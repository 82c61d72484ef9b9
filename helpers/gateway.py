"""The LiteLLM gateway: one configuration for both targets, the local proxy and its cache, the eks secrets and keys.

The configuration has one source, `manifests/04-gateway/` (`litellm-config.j2` + `parameters.yaml`):
helpers.manifests renders it into a ConfigMap for eks, and this module renders the very same template
for the local proxy, with loopback endpoints instead of Kubernetes Service names. The PII guardrail and
the key check the proxy loads live in helpers/gateway_hooks.py (a link to it sits in the chapter folder,
so the ConfigMap carries the same file).

The proxy runs from its own environment, .venvs/litellm (requirements/litellm.txt): LiteLLM's proxy
needs mcp>=2.3 and rich<14, which the agent's packages cannot share.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from helpers import manifests, stack
from helpers.config import ROOT, Settings, get_settings

CHAPTER = "04-gateway"
CONFIG_TEMPLATE = "litellm-config.j2"
HOOKS_FILE = ROOT / "helpers" / "gateway_hooks.py"
PROXY_VENV = ROOT / ".venvs" / "litellm"
INSTALL_COMMANDS = (
    "make gateway-env  (that is: python3.11 -m venv .venvs/litellm && .venvs/litellm/bin/pip install pip==25.3 && "
    ".venvs/litellm/bin/pip install -r requirements/litellm.txt)"
)
ROUTES = ("reasoning", "vision", "embedding")
# The keys of the config that hold where things are, not how they behave (see config_without_endpoints).
ENDPOINT_KEYS = ("api_base", "host", "port", "password", "database_url")
EMBEDDING_SERVICE = "ray-serve"  # the local embedding backend: the Ray Serve app of chapter 03, as on EKS
SECRET_NAME = "litellm-secrets"
POSTGRES_SECRET_NAME = "litellm-postgres"


class GatewayError(RuntimeError):
    """The gateway cannot be set up or reached; the message says what to do."""


def _secret_value(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


# ---------------------------------------------------------------- the one configuration


def proxy_installed() -> bool:
    """Whether the gateway's own environment (.venvs/litellm) exists."""
    return (PROXY_VENV / "bin" / "litellm").exists()


def cache_backend() -> str:
    """The local gateway's cache: "redis" when the machine has redis-server, else "local" (in-memory)."""
    return "redis" if "redis" in stack.get_service("gateway").requires else "local"


def local_endpoints(settings: Settings | None = None) -> dict[str, Any]:
    """Where the local gateway sends each route and finds its cache (the loopback ports of helpers.stack)."""
    settings = settings or get_settings()
    defaults = manifests.chapter_parameters(CHAPTER)["local"]
    return {
        "reasoning_url": settings.model_server_url,
        "vision_url": defaults["vision_url"],  # no local vision model: a port nothing can listen on
        "embedding_url": stack.get_service(EMBEDDING_SERVICE).url(settings),
        "cache": cache_backend(),
        "redis_host": settings.host,
        "redis_port": settings.redis_port,
    }


def config_text(target: str | None = None, settings: Settings | None = None, **overrides: Any) -> str:
    """The gateway's config.yaml for a target, comments included (what the notebook shows)."""
    settings = settings or get_settings()
    target = target or settings.target
    context: dict[str, Any] = {"local": local_endpoints(settings)} if target == "local" else {}
    context = manifests.deep_merge(context, overrides)
    return manifests.render_text(CHAPTER, CONFIG_TEMPLATE, target=target, overrides=context, settings=settings)


def gateway_config(target: str | None = None, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """The gateway's configuration for a target, as data."""
    return yaml.safe_load(config_text(target, settings, **overrides))


def config_without_endpoints(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config with every endpoint (URLs, hosts, ports, passwords) removed: what must match across targets."""
    if isinstance(config, dict):
        return {k: config_without_endpoints(v) for k, v in config.items() if k not in ENDPOINT_KEYS}
    if isinstance(config, list):
        return [config_without_endpoints(v) for v in config]
    return config


def routes_table(settings: Settings | None = None) -> list[dict[str, str]]:
    """One row per route: the name clients use and the backend behind it in each target."""
    settings = settings or get_settings()
    local = {m["model_name"]: m["litellm_params"]["api_base"] for m in gateway_config("local", settings)["model_list"]}
    eks = {m["model_name"]: m["litellm_params"]["api_base"] for m in gateway_config("eks", settings)["model_list"]}
    notes = {
        "reasoning": "llama.cpp + Qwen2.5-Coder-0.5B (stand-in for vLLM + Qwen3-14B)",
        "vision": "none: no vision model runs on a laptop (every call fails, the fallback answers)",
        "embedding": "the same Ray Serve app (local Ray) + llama.cpp, all-MiniLM-L6-v2",
    }
    return [{"route": name, "eks backend": eks[name], "local backend": local[name], "local model": notes[name]}
            for name in eks]


def tracing_available() -> bool:
    """Whether the gateway's environment has the OpenTelemetry SDK LiteLLM's `otel`/`langfuse_otel` callbacks need."""
    return any(PROXY_VENV.glob("lib/python3*/site-packages/opentelemetry/sdk/trace/__init__.py"))


def with_tracing(text: str, target: str) -> str:
    """A gateway config.yaml with chapter 05's tracing: LiteLLM's OTel callback, and the caller's traceparent forwarded."""
    from helpers.tracing import gateway_callback

    marker = "litellm_settings:\n"
    if marker not in text:
        raise GatewayError("The gateway config has no litellm_settings section to add tracing to.")
    lines = (f"  callbacks: [{gateway_callback(target)}]".ljust(46) + "# chapter 05: a span per request, to Langfuse "
             "or Phoenix (helpers.tracing)\n"
             + "  forward_traceparent_to_llm_provider: true".ljust(46) + "# chapter 05: the backend joins the caller's trace\n")
    return text.replace(marker, marker + lines, 1)


def tracing_active(settings: Settings | None = None) -> bool:
    """Whether the local gateway's config on disk (what the running proxy loaded at start) has tracing on."""
    settings = settings or get_settings()
    path = settings.state_dir / "config" / "gateway" / "config.yaml"
    return path.exists() and "forward_traceparent_to_llm_provider: true" in path.read_text()


def write_local_config(settings: Settings | None = None) -> Path:
    """Write the local config.yaml and the hooks it loads into the state folder; return the config's path."""
    settings = settings or get_settings()
    folder = settings.state_dir / "config" / "gateway"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOOKS_FILE, folder / HOOKS_FILE.name)
    path = folder / "config.yaml"
    text = config_text("local", settings)
    path.write_text(with_tracing(text, "local") if tracing_available() else text)
    return path


# ---------------------------------------------------------------- local services (helpers.stack builds these)


def gateway_command(settings: Settings) -> list[str]:
    """Command line of the local LiteLLM proxy (writes its config first)."""
    if not proxy_installed():
        raise stack.StackError(f"The gateway's environment {PROXY_VENV} does not exist. Create it with:\n  "
                               f"{INSTALL_COMMANDS}\n(from {ROOT}), then re-run.")
    return [str(PROXY_VENV / "bin" / "litellm"), "--config", str(write_local_config(settings)),
            "--host", settings.host, "--port", str(settings.gateway_port), "--num_workers", "1"]


def gateway_environment(settings: Settings) -> dict[str, str]:
    """The proxy's environment: the keys it needs (never in its config file), no telemetry, no price download."""
    if settings.gateway_master_key is None:
        raise stack.StackError("No gateway master key in the settings. Run `python -m helpers.doctor` to generate "
                               "the workshop secrets into .env, then re-run.")
    from helpers.tracing import gateway_environment as tracing_environment

    return {
        **(tracing_environment(settings) if tracing_available() else {}),  # chapter 05: where spans go
        "LITELLM_MASTER_KEY": _secret_value(settings.gateway_master_key),
        "MODEL_SERVER_API_KEY": _secret_value(settings.model_server_api_key),
        "EMBEDDING_API_KEY": _secret_value(settings.serve_api_key),  # the Ray Serve app's bearer key
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # use the price list shipped in the package, do not download one
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def redis_command(settings: Settings) -> list[str]:
    """Command line of the local Redis: loopback only, no persistence, no password (nothing leaves the machine)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise stack.StackError("redis-server is not installed. On Debian/Ubuntu: `sudo apt-get install "
                               "redis-server`; on macOS: `brew install redis`. Without it the gateway uses "
                               "its in-memory cache.")
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


# ---------------------------------------------------------------- clients


def gateway_url(settings: Settings | None = None) -> str:
    """The OpenAI-compatible base URL of the local gateway."""
    settings = settings or get_settings()
    return stack.get_service("gateway").url(settings)


def master_key(settings: Settings | None = None) -> str:
    """The gateway's master key (for API calls; never print it: use config.mask)."""
    settings = settings or get_settings()
    if settings.gateway_master_key is None:
        raise GatewayError("No gateway master key: run `python -m helpers.doctor` to generate the workshop secrets.")
    return settings.gateway_master_key.get_secret_value()


def client(api_key: str | None = None, settings: Settings | None = None, base_url: str | None = None,
           **kwargs: Any) -> Any:
    """An OpenAI client pointed at the gateway (default: the local one, with the master key)."""
    from openai import OpenAI

    return OpenAI(base_url=base_url or gateway_url(settings), api_key=api_key or master_key(settings), **kwargs)


def response_headers(raw: Any) -> dict[str, str]:
    """The gateway's x-litellm-* headers of a raw response (which model group answered, retries, fallbacks)."""
    keep = ("x-litellm-model-group", "x-litellm-attempted-retries", "x-litellm-attempted-fallbacks",
            "x-litellm-model-api-base", "x-litellm-cache-hit", "x-litellm-overhead-duration-ms")
    return {k: raw.headers[k] for k in keep if k in raw.headers}


# ---------------------------------------------------------------- eks


def render(target: str = "eks", overrides: dict[str, Any] | None = None, include_on_demand: bool = False,
           settings: Settings | None = None) -> list[manifests.Manifest]:
    """The chapter's Kubernetes objects for a target (the ConfigMap holds gateway_config(target))."""
    return manifests.render_chapter(CHAPTER, target=target, overrides=overrides,
                                    include_on_demand=include_on_demand, settings=settings)


def secret_objects(namespace: str, settings: Settings | None = None, existing: dict[str, dict[str, str]] | None = None
                   ) -> list[dict[str, Any]]:
    """The Secrets the gateway needs, with values generated now (or kept from `existing`); never written to disk."""
    settings = settings or get_settings()
    existing = existing or {}
    pg = existing.get(POSTGRES_SECRET_NAME) or {"POSTGRES_USER": "litellm", "POSTGRES_DB": "litellm",
                                                  "POSTGRES_PASSWORD": secrets.token_urlsafe(24)}
    old = existing.get(SECRET_NAME) or {}
    postgres = manifests.chapter_parameters(CHAPTER)["postgres"]["name"]
    values = {
        "LITELLM_MASTER_KEY": master_key(settings),
        "LITELLM_SALT_KEY": old.get("LITELLM_SALT_KEY") or "sk-salt-" + secrets.token_urlsafe(24),
        "REDIS_PASSWORD": old.get("REDIS_PASSWORD") or secrets.token_urlsafe(24),
        "DATABASE_URL": f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@{postgres}.{namespace}.svc"
                        f":5432/{pg['POSTGRES_DB']}",
        "MODEL_SERVER_API_KEY": _secret_value(settings.model_server_api_key),  # vLLM's --api-key (chapter 02)
        "EMBEDDING_API_KEY": _secret_value(settings.serve_api_key),  # the Ray Serve app's bearer key (chapter 03)
    }
    labels = dict(manifests.COMMON_LABELS)
    return [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": POSTGRES_SECRET_NAME, "namespace": namespace, "labels": labels}, "stringData": pg},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": labels}, "stringData": values},
    ]


def create_secrets(namespace: str, settings: Settings | None = None) -> list[str]:
    """Create or update the gateway's Secrets in the cluster (generated passwords kept across runs); return their names."""
    import base64

    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException

    from helpers import k8s

    k8s.cluster_reachable()
    core = k8s_client.CoreV1Api()
    existing: dict[str, dict[str, str]] = {}
    for name in (POSTGRES_SECRET_NAME, SECRET_NAME):
        try:
            data = core.read_namespaced_secret(name, namespace).data or {}
            existing[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        except ApiException as error:
            if error.status != 404:
                raise
    objects = secret_objects(namespace, settings, existing)
    k8s.apply(objects)
    return [o["metadata"]["name"] for o in objects]


def agent_key_request(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of POST /key/generate for the agent's virtual key: its models, budget and rate limits."""
    p = params or manifests.chapter_parameters(CHAPTER)["agent_key"]
    return {"key_alias": p["alias"], "models": list(p["models"]), "max_budget": p["max_budget"],
            "budget_duration": p["budget_duration"], "rpm_limit": p["rpm_limit"], "tpm_limit": p["tpm_limit"],
            "metadata": {"created_by": "llm-eks-workshop", "for": "chapter 08 supervisor agent"}}


def main(argv: list[str] | None = None) -> int:
    """Command line: print the gateway config for a target."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=manifests.TARGETS, default=None)
    args = parser.parse_args(argv)
    print(config_text(args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
