"""The workshop's two MCP servers (web search, a sandboxed filesystem) and how the local stack starts them.

Each server is its own module, runnable with `python -m`, served over streamable HTTP at `/mcp` with a
plain `GET /health` beside it. This package imports nothing heavy at import time, so helpers.local.stack can
resolve the command builders below without loading the MCP SDK.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helpers.config import Settings

WEB_SEARCH_SERVICE = "mcp-web-search"
FILESYSTEM_SERVICE = "mcp-filesystem"


def web_search_command(settings: Settings) -> list[str]:
    """The argv of the stack's `mcp-web-search` service (loopback, the configured port)."""
    return [sys.executable, "-m", "services.mcp.web_search",
            "--host", settings.host, "--port", str(settings.mcp_web_search_port)]


def web_search_environment(settings: Settings) -> dict[str, str]:
    """TAVILY_API_KEY for the web-search process: from the environment, else from the git-ignored .env file."""
    from helpers.config import ENV_FILE

    name = "TAVILY_API_KEY"
    if name in os.environ:  # set, even to "", wins: an empty value means "use the offline stand-in"
        return {name: os.environ[name]}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == name and not key.lstrip().startswith("#"):
                return {name: value.strip().strip("'\"")}
    return {}


def filesystem_command(settings: Settings) -> list[str]:
    """The argv of the stack's `mcp-filesystem` service, confined to settings.mcp_workspace."""
    settings.mcp_workspace.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "services.mcp.filesystem", "--root", str(settings.mcp_workspace),
            "--host", settings.host, "--port", str(settings.mcp_filesystem_port)]


def web_search_url(settings: Settings | None = None) -> str:
    """The MCP endpoint of the local web-search server."""
    from helpers.config import get_settings

    settings = settings or get_settings()
    return f"http://{settings.host}:{settings.mcp_web_search_port}/mcp"


def filesystem_url(settings: Settings | None = None) -> str:
    """The MCP endpoint of the local filesystem server."""
    from helpers.config import get_settings

    settings = settings or get_settings()
    return f"http://{settings.host}:{settings.mcp_filesystem_port}/mcp"
