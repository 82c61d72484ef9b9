"""The local stack's services: what each one runs, where it listens, how it is known healthy, what it needs.

Each layer owns how its program starts (`local.py` of the layer: the argv and environment builders); this table
only lists them, in start order. helpers.local.stack supervises them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.config import Settings
from helpers.layers.agent import local as agent_local
from helpers.layers.gateway import local as gateway_local
from helpers.layers.mcp import local as mcp_local
from helpers.layers.models import servers
from helpers.layers.observability import trace_store, tracing
from helpers.layers.ray import local as ray_local


@dataclass(frozen=True)
class Service:
    """A local service: how to start it, where it listens, and how to know it is healthy."""

    name: str
    description: str
    command: Callable[[Settings], list[str]]  # the argv (it may write config and verify models first)
    port_setting: str  # the Settings field holding the port
    health_path: str
    start_timeout: float = 60.0
    requires: tuple[str, ...] = ()
    auth_setting: str | None = None  # the Settings field holding the bearer key the health check sends
    url_path: str = "/v1"
    env: Callable[[Settings], dict[str, str]] | None = None  # extra environment variables (secrets travel here)
    health_check: Callable[[Settings], bool] | None = None  # instead of an HTTP GET on health_path
    warm_up: Callable[[Settings], list[str]] | None = None  # run once healthy, before callers see it (problems)
    scheme: str = "http"  # how clients address it (shown in status)
    scratch: Callable[[Settings], Path] | None = None  # a folder it writes while running; removed when stopped

    def port(self, settings: Settings) -> int:
        """The port this service listens on."""
        return int(getattr(settings, self.port_setting))

    def url(self, settings: Settings) -> str:
        """The base URL clients use."""
        return f"{self.scheme}://{settings.host}:{self.port(settings)}{self.url_path}"

    def argv(self, settings: Settings) -> list[str]:
        """The command line that starts the service (may prepare config and models first)."""
        return self.command(settings)

    def environment(self, settings: Settings) -> dict[str, str]:
        """Extra environment variables for the process (secrets travel here, never on the command line)."""
        return self.env(settings) if self.env else {}


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            name="model-server",
            description="llama.cpp OpenAI-compatible server, chat model (stand-in for vLLM)",
            command=servers.chat_server_command,
            env=tracing.server_environment,  # spans for requests that carry a traceparent (chapter 05)
            port_setting="model_server_port",
            health_path="/v1/models",
            auth_setting="model_server_api_key",
            start_timeout=90,
        ),
        Service(  # not part of the platform (it embeds through the gateway -> Ray Serve): a fast, direct
            # embedding endpoint for the tests and benches that measure ingestion (starts in ~1 s; Ray takes ~1 min)
            name="embedding-server",
            description="llama.cpp server, embedding model (tests and benches only; the platform uses Ray Serve)",
            command=servers.embedding_server_command,
            port_setting="embedding_server_port",
            health_path="/v1/models",
            auth_setting="model_server_api_key",
            start_timeout=60,
        ),
        Service(
            name="ray-serve",
            description="Ray Serve app (embeddings; chat forwarded to model-server) under a loopback-only local Ray",
            command=ray_local.launch_command,
            requires=("model-server",),  # the app's chat route forwards there (no second chat model in Ray)
            env=tracing.server_environment,  # spans for requests that carry a traceparent (chapter 05)
            port_setting="serve_port",
            health_path="/health",
            auth_setting="serve_api_key",
            url_path="/v1",
            start_timeout=300,  # Ray + two deployments: ~30 s on 2 idle cores; a busy machine may retry Ray
            # Ray's session folder: the launcher removes it on SIGTERM, unless Ray's core worker exits the launcher
            # first (it does when the raylet goes away under a connected driver), so the stack removes it too
            scratch=ray_local.ray_temp_dir,
        ),
        Service(
            name="redis",
            description="Redis (Debian's redis-server), the gateway's response cache; loopback, no persistence",
            command=gateway_local.redis_command,
            port_setting="redis_port",
            health_path="",
            health_check=gateway_local.redis_ping,
            scheme="redis",
            url_path="",
            start_timeout=20,
        ),
        Service(
            name="gateway",
            description="LiteLLM proxy (its own venv .venvs/litellm): routes, fallbacks, cache, PII guardrail",
            command=gateway_local.gateway_command,
            env=gateway_local.gateway_environment,
            port_setting="gateway_port",
            health_path="/health/liveliness",
            warm_up=gateway_local.warm_up,  # LiteLLM's first request costs ~100 ms more: paid here, not by a learner
            # chat: the llama.cpp server; embeddings: the Ray Serve app (as on EKS); Redis only where the
            # machine has redis-server (otherwise the gateway uses its in-memory cache)
            requires=("model-server", "ray-serve") + (("redis",) if shutil.which("redis-server") else ()),
            start_timeout=90,
        ),
        Service(
            name="phoenix",
            description="Arize Phoenix (its own venv .venvs/phoenix): trace store + UI, OTLP/HTTP on /v1/traces",
            command=trace_store.phoenix_command,
            env=trace_store.phoenix_environment,
            port_setting="phoenix_port",
            health_path="/healthz",
            url_path="",
            start_timeout=90,  # ~9 s on an idle machine; the first start also creates its SQLite database
        ),
        Service(
            name="mcp-web-search",
            description="MCP server: web_search, news_search (Tavily with TAVILY_API_KEY, else the offline stand-in)",
            command=mcp_local.web_search_command,
            env=mcp_local.web_search_environment,
            port_setting="mcp_web_search_port",
            health_path="/health",
            url_path="/mcp",
            start_timeout=30,
        ),
        Service(
            name="mcp-filesystem",
            description="MCP server: read/write/list/info confined to the workspace folder (.workshop/workspace)",
            command=mcp_local.filesystem_command,
            port_setting="mcp_filesystem_port",
            health_path="/health",
            url_path="/mcp",
            start_timeout=30,
        ),
        Service(
            name="agent-api",
            description="the supervisor agent's FastAPI (notebook 08): /query, /ingest, /health, bearer key",
            command=agent_local.agent_api_command,
            env=agent_local.agent_api_environment,
            port_setting="agent_api_port",
            health_path="/health",
            url_path="",
            requires=("gateway", "mcp-web-search", "mcp-filesystem"),
            start_timeout=60,
        ),
    )
}

DEFAULT_SERVICES: tuple[str, ...] = ("model-server",)  # `make up`; each notebook's set-up starts what it needs
