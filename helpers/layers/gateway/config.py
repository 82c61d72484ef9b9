"""The gateway's one configuration, for both targets: `manifests/04-gateway/litellm-config.j2` + `parameters.yaml`.

helpers.infra.manifests renders it into the ConfigMap on eks; the local proxy gets the very same template with
loopback endpoints instead of Kubernetes Service names. Tracing (chapter 05) is a switch of the template, so
re-applying chapter 04 can never drop it by accident.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import yaml

from helpers.infra import manifests

if TYPE_CHECKING:
    from helpers.target import Target

CHAPTER = "04-gateway"
CONFIG_TEMPLATE = "litellm-config.j2"
ROUTES = ("reasoning", "vision", "embedding")
# The keys of the config that hold where things are, not how they behave (see config_without_endpoints).
ENDPOINT_KEYS = ("api_base", "host", "port", "password", "database_url")


def cache_backend() -> str:
    """The local gateway's cache: "redis" when this machine has redis-server, else "local" (in-memory)."""
    return "redis" if shutil.which("redis-server") else "local"


def local_endpoints(t: Target) -> dict[str, Any]:
    """Where the local gateway sends each route and finds its cache: the target's loopback endpoints."""
    defaults = manifests.chapter_parameters(CHAPTER)["local"]
    return {
        "reasoning_url": t.chat.base_url,
        "vision_url": defaults["vision_url"],  # no local vision model: a port nothing can listen on
        "embedding_url": t.embeddings.base_url,  # the Ray Serve app of chapter 03, as on EKS
        "cache": cache_backend(),
        "redis_host": t.settings.host,
        "redis_port": t.settings.redis_port,
    }


def tracing_context(t: Target, tracing: bool | None) -> dict[str, Any] | bool:
    """The template's `tracing` switch: LiteLLM's callback when tracing is on, else False.

    None means the target's default: on EKS the chapter's parameters (on: Langfuse in the cluster); on the laptop
    on when a trace store is there to receive the spans (Phoenix's venv, or your Langfuse)."""
    from helpers.layers.observability import trace_store
    from helpers.layers.observability import tracing as otel

    if tracing is None:
        if t.is_eks:
            return dict(manifests.chapter_parameters(CHAPTER)["tracing"])
        tracing = trace_store.phoenix_installed() or otel.langfuse_configured()
    return {"callback": otel.gateway_callback(t)} if tracing else False


def config_text(t: Target, tracing: bool | None = None, **overrides: Any) -> str:
    """The gateway's config.yaml for the target, comments included (what the notebook shows)."""
    context: dict[str, Any] = {"local": local_endpoints(t)} if t.is_local else {}
    context["tracing"] = tracing_context(t, tracing)
    context = manifests.deep_merge(context, overrides)
    return t.render_text(CONFIG_TEMPLATE, chapter=CHAPTER, overrides=context)


def gateway_config(t: Target, tracing: bool | None = None, **overrides: Any) -> dict[str, Any]:
    """The gateway's configuration for the target, as data."""
    return yaml.safe_load(config_text(t, tracing, **overrides))


def config_without_endpoints(config: Any) -> Any:
    """A copy of a config with every endpoint (URLs, hosts, ports, passwords) removed: what must match across targets."""
    if isinstance(config, dict):
        return {k: config_without_endpoints(v) for k, v in config.items() if k not in ENDPOINT_KEYS}
    if isinstance(config, list):
        return [config_without_endpoints(v) for v in config]
    return config


def _backend(route: dict[str, Any]) -> str:
    params = route["litellm_params"]
    return params.get("api_base") or f"{params['model']} ({params.get('aws_region_name', 'AWS')})"


def routes_table(local: Target, eks: Target, **overrides: Any) -> list[dict[str, str]]:
    """One row per route: the name clients use and the backend behind it in each target (overrides: chapter 04's
    parameters for the eks side, e.g. bedrock={"enabled": True})."""
    here = {m["model_name"]: _backend(m) for m in gateway_config(local)["model_list"]}
    there = {m["model_name"]: _backend(m) for m in gateway_config(eks, **overrides)["model_list"]}
    notes = {
        "reasoning": "llama.cpp + Qwen2.5-Coder-0.5B (stand-in for vLLM + Qwen3-14B)",
        "vision": "none: no vision model runs on a laptop (every call fails, the fallback answers)",
        "embedding": "the same Ray Serve app (local Ray) + llama.cpp, all-MiniLM-L6-v2",
    }
    return [{"route": name, "eks backend": there[name], "local backend": here.get(name, "none: eks only"),
             "local model": notes.get(name, "none: Amazon Bedrock is reached from the cluster only")}
            for name in there]
