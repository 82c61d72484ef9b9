"""Shared fixtures: an isolated settings/state folder so tests never touch a learner's running stack, and a guard
that fails any test starting a local service without the `services` marker (so `make test-unit` starts none)."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

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


@pytest.fixture
def no_aws_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS credentials anywhere boto3 looks: environment, config files, instance metadata."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


SERVICES_MARKER = "services"


def _stack_service(service: Any, *_: Any, **__: Any) -> str:
    return f"{service.name!r} (helpers.local.stack)"


def _uvicorn_app(server: Any, *_: Any, **__: Any) -> str:
    return f"uvicorn ({server.config.app!r})"


def _local_ray(*_: Any, **__: Any) -> str:
    return "a local Ray (ray.init)"


@contextmanager
def services_refused() -> Iterator[None]:
    """Every way a test could start a service raises instead, naming the service and the marker to add.

    Refused: helpers.local.stack's process start (every service of the local stack), uvicorn servers run in
    this process (agent API, MCP servers, the llama.cpp server's app), and a local Ray (`ray.init`, which
    `serve.run` calls) when Ray is imported. A refusal in another thread, which the thread would swallow,
    fails the test when the block ends.
    """
    refused: list[str] = []

    def guard(describe: Callable[..., str]) -> Callable[..., NoReturn]:
        def refuse(*args: Any, **kwargs: Any) -> NoReturn:
            message = f"this test starts service {describe(*args, **kwargs)}: mark it @pytest.mark.{SERVICES_MARKER}"
            if threading.current_thread() is not threading.main_thread():
                refused.append(message)
            pytest.fail(message, pytrace=False)

        return refuse

    import uvicorn

    from helpers.local import stack

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack, "_start_locked", guard(_stack_service))
        patch.setattr(uvicorn.Server, "serve", guard(_uvicorn_app))
        if "ray" in sys.modules:  # a test module that uses Ray imported it at collection, before any test runs
            patch.setattr(sys.modules["ray"], "init", guard(_local_ray))
        yield
    if refused:
        pytest.fail("\n".join(refused), pytrace=False)


# A hook rather than an autouse fixture: pytest sets up module- and session-scoped fixtures (tests/test_gateway.py's
# running_gateway starts the whole stack) before any function-scoped one, so only a guard around the whole setup
# phase also covers them. Marked tests (pytest -m services, make test-services) run unguarded.


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Set-up of a test without the `services` marker (its fixtures of every scope) starts no service."""
    if item.get_closest_marker(SERVICES_MARKER):
        return (yield)
    with services_refused():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test without the `services` marker starts no service."""
    if item.get_closest_marker(SERVICES_MARKER):
        return (yield)
    with services_refused():
        return (yield)
