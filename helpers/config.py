"""One settings object for the whole workshop: target, ports, model names, endpoints, secrets."""

from __future__ import annotations

import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = ROOT / ".env"

# Secrets generated on first run; each is written to .env (git-ignored, mode 600) and never printed.
GENERATED_SECRETS: dict[str, str] = {
    "WORKSHOP_GATEWAY_MASTER_KEY": "sk-workshop-",
    "WORKSHOP_MODEL_SERVER_API_KEY": "sk-local-",
    "WORKSHOP_SERVE_API_KEY": "sk-serve-",
    "WORKSHOP_AGENT_API_KEY": "sk-agent-",
}


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llm-eks-workshop"


class Settings(BaseSettings):
    """Every knob of the workshop, read from WORKSHOP_* variables and the git-ignored .env file."""

    model_config = SettingsConfigDict(
        env_prefix="WORKSHOP_", env_file=str(ENV_FILE), env_file_encoding="utf-8", extra="ignore"
    )

    target: Literal["local", "eks"] = "local"

    # where things live
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    state_dir: Path = ROOT / ".workshop"

    # local services bind to loopback only
    host: str = "127.0.0.1"
    model_server_port: int = 18080
    embedding_server_port: int = 18081
    gateway_port: int = 18084  # the LiteLLM gateway (notebook 04)
    redis_port: int = 18085  # the gateway's response cache, when redis-server is installed
    serve_port: int = 18082  # Ray Serve's HTTP proxy (services.ray_app.local_launcher)
    mcp_web_search_port: int = 18086  # the web-search MCP server (notebook 07)
    mcp_filesystem_port: int = 18087  # the filesystem MCP server (notebook 07)
    agent_api_port: int = 18089  # the supervisor agent's API (notebook 08)
    phoenix_port: int = 18088  # Arize Phoenix: trace UI, REST API and OTLP/HTTP on /v1/traces (notebook 05)
    phoenix_grpc_port: int = 18090  # Phoenix's OTLP/gRPC collector (loopback; the workshop sends over HTTP)

    # the registry names of the model files (see helpers.layers.models)
    chat_model: str = "qwen2.5-coder-0.5b-instruct-q4_k_m"
    smoke_model: str = "smollm2-135m-instruct-q4_1"
    embedding_model: str = "all-minilm-l6-v2-f16"

    # the names clients ask for: identical in both targets (vLLM's --served-model-name on EKS)
    served_chat_model: str = "reasoning"
    served_embedding_model: str = "embedding"

    # llama.cpp threads: 0 means "the CPUs this process may use"
    n_threads: int = 0
    chat_context: int = 8192

    # generated secrets (see ensure_secrets)
    gateway_master_key: SecretStr | None = None
    model_server_api_key: SecretStr | None = None
    serve_api_key: SecretStr | None = None
    agent_api_key: SecretStr | None = None

    # where a program finds its dependencies when told by its environment (the agent's pod on EKS sets these);
    # unset, helpers.target.Target derives them from the target (loopback ports, or in-cluster Service names)
    gateway_url: str | None = None
    gateway_api_key: SecretStr | None = None  # the agent's virtual key on EKS (chapter 04); else the master key
    opensearch_endpoint: str | None = None
    mcp_web_search_url: str | None = None
    mcp_filesystem_url: str | None = None

    # eks target
    compute_mode: Literal["auto-mode", "karpenter"] = "auto-mode"  # EKS Auto Mode or self-managed Karpenter
    aws_region: str = "us-west-2"
    cluster_name: str = "llm-workshop"
    namespace: str = "llm-workshop"

    @property
    def models_dir(self) -> Path:
        """Folder that holds verified model files."""
        return self.cache_dir / "models"

    @property
    def threads(self) -> int:
        """Threads for llama.cpp: the configured number, or the CPUs this process may run on."""
        if self.n_threads > 0:
            return self.n_threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # macOS has no sched_getaffinity
            return max(1, os.cpu_count() or 1)

    @property
    def model_server_url(self) -> str:
        """OpenAI-compatible base URL of the local model server (the stand-in for vLLM)."""
        return f"http://{self.host}:{self.model_server_port}/v1"

    @property
    def embedding_server_url(self) -> str:
        """OpenAI-compatible base URL of the local embedding server."""
        return f"http://{self.host}:{self.embedding_server_port}/v1"

    @property
    def mcp_workspace(self) -> Path:
        """The only folder the filesystem MCP server may read and write (notebook 07)."""
        return self.state_dir / "workspace"


def ensure_secrets(env_file: Path = ENV_FILE) -> list[str]:
    """Generate any missing workshop secret into the git-ignored .env file; return the names created."""
    existing: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                existing[key.strip()] = value.strip()
    created = [name for name in GENERATED_SECRETS if not existing.get(name) and not os.environ.get(name)]
    if created:
        with env_file.open("a") as fh:
            if not existing:
                fh.write("# Generated by the workshop on first run. Git-ignored. Do not commit or share.\n")
            for name in created:
                fh.write(f"{name}={GENERATED_SECRETS[name]}{secrets.token_urlsafe(24)}\n")
        env_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
        get_settings.cache_clear()
    return created


def project_path(path: Path | str) -> str:
    """A path as a notebook prints it: relative to the project folder when inside it, else as it is."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def mask(secret: SecretStr | str | None) -> str:
    """Show that a secret is set without revealing it: a prefix hint and its length only."""
    if secret is None:
        return "<not set>"
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not value:
        return "<empty>"
    prefix = value.split("-", 2)[0] if "-" in value else ""
    return f"{prefix + '-' if prefix else ''}…({len(value)} chars)"


def env_file_writable(env_file: Path = ENV_FILE) -> bool:
    """Whether .env can be created or appended to (a pod's read-only root filesystem cannot)."""
    target = env_file if env_file.exists() else env_file.parent
    return os.access(target, os.W_OK)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The workshop settings. On a learner's machine, missing secrets are generated into .env first; a program
    told it runs on EKS (WORKSHOP_TARGET=eks, e.g. the agent's pod), or one whose .env cannot be written, reads
    its settings from the environment only and writes nothing."""
    settings = Settings()
    if settings.target == "local" and env_file_writable() and ensure_secrets():
        settings = Settings()
    return settings


def reload_settings() -> Settings:
    """Re-read settings after the environment or .env changed."""
    get_settings.cache_clear()
    return get_settings()
