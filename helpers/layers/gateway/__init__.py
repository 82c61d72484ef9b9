"""Chapter 04: the LiteLLM gateway, the platform's front door.

    config   the one configuration for both targets (manifests/04-gateway/litellm-config.j2)
    local    the local proxy (own venv) and its Redis cache, as stack services
    deploy   the eks side: objects, Secrets generated at apply time, the agent's virtual key
    timing   the gateway's overhead (paired requests) and whether an answer was a cache hit

Clients find the gateway through the notebook's Target (`t.gateway`: URL, key, a ready OpenAI client).
"""

from __future__ import annotations

from typing import Any

from helpers.layers.gateway.config import (
    CHAPTER,
    ROUTES,
    cache_backend,
    config_text,
    config_without_endpoints,
    gateway_config,
    routes_table,
)
from helpers.layers.gateway.deploy import agent_key_request, create_secrets, render, secret_objects
from helpers.layers.gateway.local import GatewayError, config_has_tracing, proxy_installed, write_local_config
from helpers.layers.gateway.timing import Overhead, cache_hit, measure_overhead

__all__ = ["CHAPTER", "ROUTES", "GatewayError", "Overhead", "agent_key_request", "cache_backend", "cache_hit",
           "config_has_tracing", "config_text", "config_without_endpoints", "create_secrets", "gateway_config",
           "measure_overhead", "proxy_installed", "render", "response_headers", "routes_table", "secret_objects",
           "write_local_config"]

RESPONSE_HEADERS = ("x-litellm-model-group", "x-litellm-attempted-retries", "x-litellm-attempted-fallbacks",
                    "x-litellm-model-api-base", "x-litellm-overhead-duration-ms")


def response_headers(raw: Any) -> dict[str, str]:
    """The gateway's x-litellm-* headers of a raw response (which model group answered, retries, fallbacks, its
    overhead), and `x-litellm-cache-hit`: "True" when the answer came from the cache (LiteLLM then sends the cache
    key it used, and no model group), else "False"."""
    found = {k: raw.headers[k] for k in RESPONSE_HEADERS if k in raw.headers}
    return {**found, "x-litellm-cache-hit": str(cache_hit(raw))}
