"""The local stack supervisor, against the real llama.cpp server (isolated state folder and ports)."""

from __future__ import annotations

import os
import signal
import socket
import time

import psutil
import pytest
from openai import OpenAI

from helpers.local import stack


def stack_processes(settings) -> list[psutil.Process]:
    """Every process in the table that belongs to this (isolated) stack: by marker or by its config file."""
    config_dir = str(settings.state_dir / "config")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(config_dir in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found + [p for p in stack.running_processes() if p.pid not in {q.pid for q in found}]


@pytest.fixture
def running_stack(isolated_settings):
    yield isolated_settings
    stack.down()


@pytest.mark.services
def test_up_reports_healthy_services_with_urls(running_stack):
    statuses = stack.up()
    assert [s.state for s in statuses] == ["healthy", "healthy"]
    listed = {s.name: s for s in stack.status()}
    assert listed["model-server"].state == "healthy"
    assert listed["model-server"].url == running_stack.model_server_url
    client = OpenAI(base_url=running_stack.model_server_url,
                    api_key=running_stack.model_server_api_key.get_secret_value())
    reply = client.chat.completions.create(model=running_stack.served_chat_model, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Say OK."}])
    assert reply.choices[0].message.content.strip()
    emb = OpenAI(base_url=running_stack.embedding_server_url,
                 api_key=running_stack.model_server_api_key.get_secret_value())
    vec = emb.embeddings.create(model=running_stack.served_embedding_model, input=["hello"]).data[0].embedding
    assert len(vec) == 384


@pytest.mark.services
def test_wrong_key_is_rejected(running_stack):
    stack.ensure("model-server")
    from openai import AuthenticationError

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=running_stack.model_server_url, api_key="wrong").models.list()


@pytest.mark.services
def test_ensure_restarts_a_killed_server(running_stack):
    first = stack.ensure("model-server")
    os.kill(first.pid, signal.SIGKILL)
    psutil.Process(first.pid).wait(5) if psutil.pid_exists(first.pid) else None
    assert stack.service_status("model-server").state == "dead"
    again = stack.ensure("model-server")
    assert again.state == "healthy" and again.pid != first.pid


@pytest.mark.services
def test_ensure_is_idempotent(running_stack):
    first = stack.ensure("model-server")
    assert stack.ensure("model-server").pid == first.pid


@pytest.mark.services
def test_port_taken_by_another_process_is_named(running_stack):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", running_stack.model_server_port))
        sock.listen()
        with pytest.raises(stack.PortInUse) as err:
            stack.ensure("model-server")
    message = str(err.value)
    assert str(running_stack.model_server_port) in message
    assert f"pid {os.getpid()}" in message
    assert "WORKSHOP_MODEL_SERVER_PORT" in message


@pytest.mark.services
def test_down_leaves_no_process_behind(running_stack):
    stack.up()
    assert stack_processes(running_stack), "the stack should be running before down"
    stack.down()
    deadline = time.monotonic() + 5
    while stack_processes(running_stack) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack_processes(running_stack) == []
    assert all(s.state == "stopped" for s in stack.status())


@pytest.mark.services
def test_a_service_that_fails_to_start_reports_its_log(running_stack, monkeypatch):
    broken = stack.Service(name="model-server", description="broken", command=broken_command,
                           port_setting="model_server_port", health_path="/v1/models", start_timeout=10)
    monkeypatch.setitem(stack.SERVICES, "model-server", broken)
    with pytest.raises(stack.StackError, match="exited during start-up") as err:
        stack.ensure("model-server")
    assert "no such model file" in str(err.value)


def test_unknown_service_names_the_known_ones():
    with pytest.raises(stack.StackError, match="Known services"):
        stack.ensure("vllm")


def broken_command(settings) -> list[str]:
    """A server command that fails the way a bad config does."""
    import sys

    return [sys.executable, "-c", "import sys; print('error: no such model file'); sys.exit(3)"]


def test_an_unmarked_test_cannot_start_a_service(isolated_settings):
    """The conftest guard: without @pytest.mark.services, starting a service fails the test, naming it."""
    import uvicorn

    with pytest.raises(pytest.fail.Exception, match=r"starts service 'model-server'.*mark it @pytest\.mark\.services"):
        stack.ensure("model-server")
    assert stack.service_status("model-server").state == "stopped"
    with pytest.raises(pytest.fail.Exception, match=r"starts service uvicorn.*mark it @pytest\.mark\.services"):
        uvicorn.run("services.agent_api.app:create_app", host="127.0.0.1", port=0)
