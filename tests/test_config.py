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
