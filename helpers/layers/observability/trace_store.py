"""The local trace store: Arize Phoenix from its own venv (.venvs/phoenix), the stack's `phoenix` service."""

from __future__ import annotations

from pathlib import Path

from helpers.config import ROOT, Settings
from helpers.errors import StackError


PHOENIX_VENV = ROOT / ".venvs" / "phoenix"


PHOENIX_PROJECT = "default"  # spans without an openinference.project.name land in Phoenix's default project


INSTALL_PHOENIX = ("make phoenix-env  (that is: python3.11 -m venv .venvs/phoenix && .venvs/phoenix/bin/pip install "
                   "pip==25.3 && .venvs/phoenix/bin/pip install -r requirements/phoenix.txt)")


def phoenix_installed() -> bool:
    """Whether Phoenix's own environment (.venvs/phoenix) exists."""
    return (PHOENIX_VENV / "bin" / "phoenix").exists()


def phoenix_command(settings: Settings) -> list[str]:
    """Command line of the local Phoenix server (its own environment, loopback only)."""
    if not phoenix_installed():
        raise StackError(f"Phoenix's environment {PHOENIX_VENV} does not exist. Create it with:\n  {INSTALL_PHOENIX}\n"
                         f"(from {ROOT}), then re-run.")
    return [str(PHOENIX_VENV / "bin" / "python"), str(ROOT / "services" / "trace_store" / "phoenix_loopback.py")]


def phoenix_environment(settings: Settings) -> dict[str, str]:
    """Phoenix's environment: loopback ports, data under the state folder, no telemetry, no gRPC listener on 0.0.0.0."""
    workdir = Path(settings.state_dir) / "phoenix"
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        "PHOENIX_HOST": settings.host,
        "PHOENIX_PORT": str(settings.phoenix_port),
        "PHOENIX_GRPC_HOST": settings.host,
        "PHOENIX_GRPC_PORT": str(settings.phoenix_grpc_port),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",  # no web fonts or other downloads from the internet
        "PHOENIX_ENABLE_AUTH": "false",  # loopback only; nothing outside this machine can reach it
        # Features the workshop does not use: Phoenix's own MCP server and its LLM-backed assistant (~17 MB).
        "PHOENIX_ENABLE_MCP_SERVER": "false",
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
        "NO_PROXY": "127.0.0.1,localhost",
    }
