"""Chapter 08 on this machine: how the stack starts the agent API (services/agent_api) as the `agent-api` service."""

from __future__ import annotations

import sys

from helpers.config import Settings

API_KEY_ENV = "WORKSHOP_AGENT_API_KEY"  # the variable the agent API reads its callers' bearer key from


def agent_api_command(settings: Settings) -> list[str]:
    """The argv of the stack's `agent-api` service (loopback, the configured port)."""
    return [sys.executable, "-m", "services.agent_api", "--host", settings.host, "--port", str(settings.agent_api_port)]


def agent_api_environment(settings: Settings) -> dict[str, str]:
    """The API key for the agent-api process (through the environment, never the command line)."""
    secret = settings.agent_api_key
    env = {"WORKSHOP_AGENT_TRACING": "1"}  # export spans to the trace store of notebook 05 (helpers.layers.observability.tracing)
    if secret:
        env[API_KEY_ENV] = secret.get_secret_value()
    return env

