"""Serve an MCP server over streamable HTTP at /mcp, with a plain GET /health beside it (loopback by default)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

MCP_PATH = "/mcp"
HEALTH_PATH = "/health"
DEFAULT_HOST = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def add_health_route(server: MCPServer, details: Callable[[], dict[str, Any]]) -> None:
    """Register GET /health: a plain JSON answer (no MCP session needed), for the stack and Kubernetes probes."""

    @server.custom_route(HEALTH_PATH, methods=["GET"], include_in_schema=False)
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "server": server.name, **details()})


def transport_security(allowed_hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    """DNS-rebinding protection: the MCP endpoint answers only requests addressed to loopback or the named hosts."""
    hosts = [*LOOPBACK_HOSTS, *allowed_hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[form for h in hosts for form in (h, f"{h}:*")],  # with or without a port
        allowed_origins=[f"http://{h}:*" for h in hosts] + [f"https://{h}:*" for h in hosts],
    )


def http_app(
    server: MCPServer, host: str = DEFAULT_HOST, allowed_hosts: Sequence[str] = (), max_request_bytes: int = 0
) -> Starlette:
    """The ASGI app: the MCP endpoint at /mcp (stateless streamable HTTP, so replicas need no sticky sessions)."""
    return server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        transport_security=transport_security(allowed_hosts),
        max_request_body_size=max(max_request_bytes, DEFAULT_MAX_REQUEST_BODY_SIZE),
        host=host,
    )


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options every workshop MCP server shares: --host, --port, --allow-host, --log-level."""
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default: loopback only; 0.0.0.0 inside a container)")
    parser.add_argument("--port", type=int, required=True, help="TCP port; the MCP endpoint is /mcp")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a Host header the MCP endpoint accepts besides loopback (repeatable), "
                             "e.g. the Kubernetes Service name")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def configure_logging(level: str) -> None:
    """Plain one-line logs; the SDK's per-request session messages are kept out of the way."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    logging.getLogger("mcp.server.streamable_http_manager").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # never log outgoing requests (they may carry a key)


def serve(app: Starlette, host: str, port: int, log_level: str = "info") -> None:
    """Run the app with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                server_header=False)
