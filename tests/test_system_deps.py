"""tools/system_deps.py: a fresh machine gets redis-server and Chromium, or is told the one line that installs them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import system_deps as sd  # noqa: E402 - tools/ is not a package


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """A machine where nothing is installed and nothing runs; tests set what they need."""
    state = {"present": set(), "ran": [], "family": "debian", "manager": "apt", "privilege": None,
             "wheel_missing": False}

    monkeypatch.setattr(sd.Need, "present", lambda self: self.name in state["present"])
    monkeypatch.setattr(sd, "os_family", lambda: state["family"])
    monkeypatch.setattr(sd, "manager", lambda family: state["manager"])
    monkeypatch.setattr(sd, "privilege", lambda: state["privilege"])
    monkeypatch.setattr(sd, "wheel_missing", lambda: state["wheel_missing"])
    monkeypatch.setattr(sd, "pip_missing", lambda: False)
    monkeypatch.delenv(sd.SKIP_VAR, raising=False)

    def fake_run(cmd, **_):
        state["ran"].append(cmd)
        if "install" in cmd:
            state["present"] |= {"redis-server", "chromium", "cmake", "C/C++ compiler", "make"}
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(sd.subprocess, "run", fake_run)
    return state


def test_nothing_to_do_when_everything_is_there(machine, capsys):
    machine["present"] = {"make", "redis-server", "chromium"}
    assert sd.main([]) == 0
    assert machine["ran"] == []
    assert "all there" in capsys.readouterr().out


def test_without_root_or_sudo_it_stops_with_the_one_line_that_installs_them(machine, capsys):
    machine["present"] = {"make"}
    assert sd.main([]) == 1
    err = capsys.readouterr().err
    assert "\n  sudo apt-get install -y redis-server chromium\n" in err
    assert machine["ran"] == []


def test_as_root_it_installs_them_with_apt(machine):
    machine["present"] = {"make"}
    machine["privilege"] = []
    assert sd.main([]) == 0
    assert machine["ran"] == [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server",
                                                                "chromium"]]


def test_with_passwordless_sudo_it_uses_sudo(machine):
    machine["privilege"] = ["sudo", "-n"]
    machine["wheel_missing"] = True
    assert sd.main([]) == 0
    assert machine["ran"][-1] == ["sudo", "-n", "apt-get", "install", "-y", "-qq", "make", "redis-server", "chromium",
                                  "build-essential", "cmake"]


def test_the_build_tools_are_needed_only_until_the_wheel_is_built(machine):
    machine["wheel_missing"] = False
    assert {n.name for n in sd.needs()} == {"make", "redis-server", "chromium"}
    machine["wheel_missing"] = True
    assert {"C/C++ compiler", "cmake"} <= {n.name for n in sd.needs()}


def test_on_macos_homebrew_installs_redis_and_the_browser_check_is_not_required(machine, capsys):
    machine.update(family="macos", manager="brew", present={"make"})
    assert sd.main([]) == 0
    assert machine["ran"] == [["brew", "install", "redis"]]
    assert "chromium" in capsys.readouterr().out


def test_check_only_reports(machine):
    machine["privilege"] = []
    assert sd.main(["--check"]) == 1
    assert machine["ran"] == []


def test_skip_goes_on_without_them(machine, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(sd.SKIP_VAR, "skip")
    assert sd.main([]) == 0
    assert machine["ran"] == []


def test_the_needs_name_real_programs_and_packages():
    assert sd.REDIS.packages == {"apt": "redis-server", "brew": "redis"}
    assert sd.CHROMIUM.paths == ("/usr/bin/chromium",), "the path tests/test_book.py opens"
    assert sd.install_line("apt", ["redis-server"]) == "sudo apt-get install -y redis-server"
