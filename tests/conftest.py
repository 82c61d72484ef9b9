"""Shared fixtures: an isolated settings/state folder so tests never touch a learner's running stack."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import config

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[config.Settings]:
    """Settings with their own state folder and a free port for every service (the model cache stays shared)."""
    monkeypatch.setenv("WORKSHOP_STATE_DIR", str(tmp_path / "state"))
    for field in config.Settings.model_fields:  # every service port, including those later chapters add
        if field.endswith("_port"):
            monkeypatch.setenv(f"WORKSHOP_{field.upper()}", str(free_port()))
    yield config.reload_settings()
    monkeypatch.undo()
    config.reload_settings()
