"""The local model servers: llama.cpp's OpenAI-compatible server, the laptop stand-in for vLLM.

Both servers run llama-cpp-python's own server app through `services.llama_server.server`, which adds what the
stand-in needs to behave like vLLM for clients: structured `tool_calls` with `tool_choice: "auto"` (the chat
model uses the "hermes-tools" chat handler of services.llama_server.tool_calls) and a 404 for an unknown model name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers.config import Settings
from helpers.layers.models import fetch

CHAT_FORMAT = "hermes-tools"  # services.llama_server.tool_calls.HANDLER_NAME, registered by services.llama_server.server at start-up
LAUNCHER = "services.llama_server.server"
PROMPT_CACHE_BYTES = 64 << 20


def server_config(settings: Settings, model_name: str, alias: str, port: int, embedding: bool) -> dict:
    """The llama_cpp.server config for one model on one loopback port."""
    model: dict[str, object] = {
        "model": str(fetch(model_name)),
        "model_alias": alias,
        "n_threads": settings.threads,
        "n_threads_batch": settings.threads,
        "verbose": False,
    }
    if embedding:
        model.update({"embedding": True, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512})
    else:
        # logits_all: llama_cpp.server defaults to True, which computes the vocabulary logits of every prompt
        # token (a third more prefill work for a 0.5B model, and 600 KB per token copied into every prompt-cache
        # entry); only `logprobs` needs them, and nothing here asks for logprobs. vLLM computes the last only.
        # cache_size: the prompt cache fills up to this and stays there (resident memory). An entry is the model
        # state after a prompt, about 12 KB per token (the judge's ~960-token prompt: 11 MB). 64 MB keeps the last
        # few: the judge's prompt with three other prompts between its calls still hit (48 MB used, nothing
        # evicted; at 32 MB entries were evicted), and the server holds up to 190 MB less than with 256 MB.
        # flash_attn: llama.cpp's fused attention, 7 % more prompt tokens/s here (217 -> 232 for a 433-token prompt,
        # median of six; decode unchanged), which is the agent's time to first token.
        model.update({"n_ctx": settings.chat_context, "chat_format": CHAT_FORMAT, "logits_all": False,
                      "cache": True, "cache_type": "ram", "cache_size": PROMPT_CACHE_BYTES, "flash_attn": True})
    key = settings.model_server_api_key
    return {
        "host": settings.host,
        "port": port,
        "api_key": key.get_secret_value() if key else None,
        # llama-cpp-python's default ends a streaming answer early ("disconnected") whenever another request
        # waits for the model, even a GET /v1/models health check; vLLM queues instead, and so does this stand-in.
        "interrupt_requests": False,
        "models": [model],
    }


def write_config(settings: Settings, name: str, config: dict) -> Path:
    """Write a server config (it holds the API key) into the state folder, readable by the owner only."""
    path = settings.state_dir / "config" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(config, indent=2))
    return path


def chat_server_command(settings: Settings) -> list[str]:
    """Command line of the chat model server (fetches and verifies the model first)."""
    config = server_config(settings, settings.chat_model, settings.served_chat_model,
                           settings.model_server_port, embedding=False)
    return [sys.executable, "-m", LAUNCHER, "--config_file", str(write_config(settings, "model-server", config))]


def embedding_server_command(settings: Settings) -> list[str]:
    """Command line of the embedding model server (fetches and verifies the model first)."""
    config = server_config(settings, settings.embedding_model, settings.served_embedding_model,
                           settings.embedding_server_port, embedding=True)
    return [sys.executable, "-m", LAUNCHER, "--config_file", str(write_config(settings, "embedding-server", config))]
