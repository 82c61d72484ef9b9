"""The local stack: start, stop, status, the supervisor that restarts dead services, memory (isolated state folders
and ports; the tests that start services are marked `services`)."""

from __future__ import annotations

import os
import signal
import socket
import time

import psutil
import pytest
from openai import OpenAI

from helpers.local import memory, records, stack
from helpers.local import supervisor as supervisor_module


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
    assert [(s.name, s.state) for s in statuses] == [("model-server", "healthy")]  # the default: the chat model
    assert stack.ensure("embedding-server").state == "healthy"  # kept for tests and benches, started on request
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
def test_ensure_restarts_a_killed_server(running_stack, monkeypatch):
    monkeypatch.setenv(records.RESTART_POLICY_ENV, "never")  # no supervisor: the dead server stays dead until ensure
    first = stack.ensure("model-server")
    assert stack.supervisor_status().state == "stopped"
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while stack.service_status("model-server").state != "dead" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.service_status("model-server").state == "dead"
    again = stack.ensure("model-server")
    assert again.state == "healthy" and again.pid != first.pid
    assert again.restarts == 1 and "killed by SIGKILL" in again.last_restart  # this process was its parent


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
    assert stack.supervisor_status().state == "running"
    stack.down()
    deadline = time.monotonic() + 5
    while stack_processes(running_stack) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack_processes(running_stack) == []
    assert all(s.state == "stopped" for s in stack.status())
    assert stack.supervisor_status().state == "stopped"


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


# ---------------------------------------------------------------- the supervisor: restartPolicy Always, with backoff


def wait_for(predicate, timeout: float, what: str):
    """Poll until predicate() returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def healthy_again(name: str, old_pid: int):
    """The service's status once it is healthy under a new pid (else None)."""
    now = stack.service_status(name)
    return now if now.state == "healthy" and now.pid not in (None, old_pid) else None


@pytest.mark.services
def test_supervisor_restarts_a_killed_service_with_backoff_and_down_stops_everything(running_stack):
    name = "mcp-web-search"  # a light service: no model to load
    first = stack.ensure(name)
    sup = stack.supervisor_status()
    assert sup.state == "running" and sup.pid
    limit = stack.get_service(name).start_timeout

    os.kill(first.pid, signal.SIGKILL)  # nothing here calls ensure again: the supervisor must bring it back
    second = wait_for(lambda: healthy_again(name, first.pid), limit, f"{name} back after kill -9")
    assert second.restarts == 1 and "SIGKILL" in second.last_restart, second

    def restarts_logged(count: int) -> str | None:
        text = stack.tail(records.SUPERVISOR, 40, running_stack)
        return text if text.count(f"{name}: restarted") >= count else None

    # healthy is visible (its record, its port) a moment before the restarter has finished and logged it: a kill
    # in that moment would be that restart failing, not a second death
    wait_for(lambda: restarts_logged(1), 30, "the supervisor has logged the first restart")
    os.kill(second.pid, signal.SIGKILL)  # dies young again: the backoff doubles (1 s, then 2 s)
    third = wait_for(lambda: healthy_again(name, second.pid), limit + 2, f"{name} back after a second kill")
    assert third.restarts == 2 and "SIGKILL" in third.last_restart  # the supervisor adopted and reaped it
    try:
        log = wait_for(lambda: restarts_logged(2), 30, "the supervisor's restart children have logged")
    except pytest.fail.Exception:
        pytest.fail("the supervisor did not log both restarts:\n" + stack.tail(records.SUPERVISOR, 40, running_stack))
    assert f"{name}: died (killed by SIGKILL); restarting in 1 s" in log
    assert f"{name}: died (killed by SIGKILL); restarting in 2 s" in log

    rows = {r["service"]: r for r in memory.memory_table(running_stack)}
    assert rows[name]["RSS MiB"] > 0 and rows[records.SUPERVISOR]["RSS MiB"] < 40  # restarts run in its children
    assert rows["whole stack"]["RSS MiB"] >= rows[name]["RSS MiB"]

    stack.down()  # the supervisor first: nothing is restarted while the stack stops
    assert not psutil.pid_exists(sup.pid) or psutil.Process(sup.pid).status() == psutil.STATUS_ZOMBIE
    assert stack_processes(running_stack) == []
    assert stack.service_status(name).state == "stopped" and stack.supervisor_status().state == "stopped"


@pytest.mark.services
def test_a_service_stopped_on_purpose_is_not_restarted(running_stack):
    name = "mcp-filesystem"
    stack.ensure(name)
    assert stack.stop(name)
    time.sleep(records.BACKOFF_BASE_S + 2 * supervisor_module.TICK_S + 1)
    assert stack.service_status(name).state == "stopped"
    assert "died" not in stack.tail(records.SUPERVISOR, 20, running_stack)


def fake_record(pid: int, **extra) -> dict:
    return {"pid": pid, "create_time": 0.0, "started_at": 1000.0, "order": 0, **extra}


def test_backoff_doubles_while_restarts_die_young_and_resets_after_a_minute_up():
    young = fake_record(1, restarts={"count": 3, "streak": 3, "last_restart": 1000.0})
    assert records.backoff_s(young, died_at=1005.0) == 8.0  # 1, 2, 4, 8 ...
    assert records.backoff_s(young, died_at=1000.0 + records.BACKOFF_RESET_S) == 1.0  # stayed up a minute
    capped = fake_record(1, restarts={"streak": 12, "last_restart": 1000.0})
    assert records.backoff_s(capped, died_at=1001.0) == records.BACKOFF_CAP_S
    failing = fake_record(1, restarts={"streak": 2, "last_restart": 1000.0, "last_error": "port taken"})
    assert records.backoff_s(failing, died_at=1200.0) == 4.0  # a failed restart never "stayed up"
    first = records.next_restarts(fake_record(1), "killed by SIGKILL", now=1010.0)
    assert first == {"count": 1, "streak": 1, "last_restart": 1010.0, "last_reason": "killed by SIGKILL",
                     "last_error": None}
    assert records.next_restarts(None, "x") == {}


def test_exit_status_of_a_killed_child_and_its_description():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc = psutil.Process(child.pid)
    record = {"pid": child.pid, "create_time": proc.create_time()}
    assert records.live_process(record) is not None
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: records.live_process(record) is None, 5, "the child is gone")
    assert records.exit_status(record) == -signal.SIGKILL
    child.returncode = -9  # reaped above: keep Popen from waiting on a pid that is no longer its
    assert records.describe_exit(-9) == "killed by SIGKILL" and records.describe_exit(3) == "exit 3"
    assert records.describe_exit(None) == "exit status unknown"


def test_the_supervisor_waits_the_backoff_then_restarts_through_the_stack(isolated_settings, monkeypatch):
    folder = stack.stack_dir(isolated_settings)
    dead = psutil.Popen(["true"])
    dead.wait()
    records.write_record(folder, "mcp-web-search", fake_record(dead.pid, started_at=50.0))
    calls = []

    def restart(self, name, death):  # what a restart child would do, recorded instead
        calls.append((name, death.reason))
        self.deaths.pop(name, None)

    monkeypatch.setattr(supervisor_module.Supervisor, "restart", restart)
    sup = supervisor_module.Supervisor(folder)
    assert sup.tick(now=100.0) is True and calls == []  # found dead at 100: due at 101 (first backoff, 1 s)
    assert sup.deaths["mcp-web-search"].due == 101.0
    sup.tick(now=100.5)
    assert calls == []
    sup.tick(now=101.0)
    assert calls == [("mcp-web-search", "exit status unknown")]  # not this process's child, no zombie left
    records.record_path(folder, "mcp-web-search").unlink()  # stopped on purpose: nothing to watch
    assert sup.tick(now=102.0) is False
    assert sup.should_exit(False, now=102.0) is False
    assert sup.should_exit(False, now=102.0 + supervisor_module.IDLE_EXIT_S) is True


def test_memory_rows_add_up_and_name_the_goal():
    big = memory.ServiceMemory("ray-serve", [memory.ProcessMemory(1, "Embedder", 300 << 20, 200 << 20),
                                             memory.ProcessMemory(2, "raylet", 30 << 20, 20 << 20)])
    small = memory.ServiceMemory("model-server", [memory.ProcessMemory(3, "server", 700 << 20, None)])
    rows = memory.rows([big, small])
    assert rows[0] == {"service": "ray-serve", "processes": 2, "RSS MiB": 330, "PSS MiB": 220,
                       "largest (RSS MiB)": "Embedder 300, raylet 30"}
    assert rows[1]["PSS MiB"] == ""  # unknown PSS shows blank, and the total's PSS too
    assert rows[-1]["service"] == "whole stack" and rows[-1]["RSS MiB"] == 1030 and rows[-1]["PSS MiB"] == ""
    assert "within the goal for every service up (<= 2.5 GB RSS)" in rows[-1]["largest (RSS MiB)"]
    assert "service" in memory.format_rows(rows).splitlines()[0]


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
