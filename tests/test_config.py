"""Settings and generated secrets."""

from __future__ import annotations

import stat

from pydantic import SecretStr

from helpers import config


def test_secrets_are_generated_once_into_a_private_file(tmp_path, monkeypatch):
    for name in config.GENERATED_SECRETS:
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / ".env"
    created = config.ensure_secrets(env)
    assert set(created) == set(config.GENERATED_SECRETS)
    first = env.read_text()
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert config.ensure_secrets(env) == []  # a second run keeps the keys
    assert env.read_text() == first
    values = [line.split("=", 1)[1] for line in first.splitlines() if "=" in line and not line.startswith("#")]
    assert len(set(values)) == len(values) and all(len(v) > 30 for v in values)


def test_mask_never_reveals_the_secret():
    secret = "sk-workshop-abcdefghijklmnopqrstuvwxyz0123"
    shown = config.mask(SecretStr(secret))
    assert "abcdefghijklmnop" not in shown and str(len(secret)) in shown
    assert config.mask(None) == "<not set>"


def test_secret_fields_are_not_printed(isolated_settings):
    text = repr(isolated_settings) + str(isolated_settings.model_dump())
    key = isolated_settings.model_server_api_key.get_secret_value()
    assert key not in text


def test_threads_follow_the_cpus_available(isolated_settings, monkeypatch):
    assert isolated_settings.threads >= 1
    monkeypatch.setenv("WORKSHOP_N_THREADS", "3")
    assert config.reload_settings().threads == 3


def test_target_is_validated(monkeypatch):
    import pytest
    from pydantic import ValidationError

    monkeypatch.setenv("WORKSHOP_TARGET", "gke")
    with pytest.raises(ValidationError):
        config.Settings()


def test_endpoints_a_program_is_told_come_from_the_environment(monkeypatch):
    """The agent's pod on EKS is told where its dependencies are; unset, the Target derives them."""
    for name in ("GATEWAY_URL", "GATEWAY_API_KEY", "OPENSEARCH_ENDPOINT", "MCP_WEB_SEARCH_URL", "MCP_FILESYSTEM_URL"):
        monkeypatch.delenv(f"WORKSHOP_{name}", raising=False)
    unset = config.Settings(_env_file=None)
    assert (unset.gateway_url, unset.gateway_api_key, unset.opensearch_endpoint) == (None, None, None)
    assert (unset.mcp_web_search_url, unset.mcp_filesystem_url) == (None, None)
    monkeypatch.setenv("WORKSHOP_GATEWAY_URL", "http://litellm.llm-workshop.svc:4000/v1")
    monkeypatch.setenv("WORKSHOP_GATEWAY_API_KEY", "sk-agent-virtual-key-0123456789")
    monkeypatch.setenv("WORKSHOP_OPENSEARCH_ENDPOINT", "search-x.us-west-2.es.amazonaws.com")
    monkeypatch.setenv("WORKSHOP_MCP_WEB_SEARCH_URL", "http://mcp-web-search.llm-workshop.svc:8000/mcp")
    told = config.Settings(_env_file=None)
    assert told.gateway_url == "http://litellm.llm-workshop.svc:4000/v1"
    assert isinstance(told.gateway_api_key, SecretStr)
    assert told.gateway_api_key.get_secret_value() == "sk-agent-virtual-key-0123456789"
    assert "sk-agent-virtual-key-0123456789" not in repr(told)
    assert told.opensearch_endpoint == "search-x.us-west-2.es.amazonaws.com"
    assert told.mcp_web_search_url == "http://mcp-web-search.llm-workshop.svc:8000/mcp"


def test_project_path_is_relative_inside_the_project_and_unchanged_outside(tmp_path) -> None:
    from helpers.config import ROOT, project_path

    assert project_path(ROOT / ".workshop" / "workspace") == ".workshop/workspace"
    assert project_path(tmp_path / "state") == str(tmp_path / "state")  # WORKSHOP_STATE_DIR elsewhere: no crash
