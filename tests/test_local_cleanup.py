"""Local cleanup: the process-table proof finds a running service and nothing after stack.down(); keys and caches."""

from __future__ import annotations

import pytest

from helpers import config
from helpers.infra.teardown import local as local_cleanup
from helpers.local import stack


@pytest.mark.services
def test_stack_processes_and_ports_before_and_after_down(isolated_settings) -> None:
    assert local_cleanup.stack_processes(isolated_settings) == []
    stack.ensure("mcp-web-search")  # a light service: no model to load
    try:
        found = local_cleanup.stack_processes(isolated_settings)
        assert found and any("marker" in p.found_by for p in found)
        assert any("recorded pid" in p.found_by for p in found)
        assert {p.service for p in found} == {"mcp-web-search", "supervisor"}, "each process named by its service"
        assert {p.row()["service"] for p in found} == {"mcp-web-search", "supervisor"}
        assert any(k.startswith("mcp-web-search :") for k in local_cleanup.busy_ports(isolated_settings))
    finally:
        stopped = stack.down()
    assert stopped == ["mcp-web-search"]
    assert local_cleanup.stack_processes(isolated_settings) == []
    assert local_cleanup.busy_ports(isolated_settings) == {}


def test_remove_generated_keys_keeps_other_lines(tmp_path) -> None:
    env = tmp_path / ".env"
    env.write_text("# header\nTAVILY_API_KEY=tvly-mine\nWORKSHOP_GATEWAY_MASTER_KEY=sk-workshop-x\n"
                   "WORKSHOP_SERVE_API_KEY=sk-serve-y\n")
    assert local_cleanup.generated_keys_in(env) == ["WORKSHOP_GATEWAY_MASTER_KEY", "WORKSHOP_SERVE_API_KEY"]
    assert local_cleanup.remove_generated_keys(env) == ["WORKSHOP_GATEWAY_MASTER_KEY", "WORKSHOP_SERVE_API_KEY"]
    assert env.read_text() == "# header\nTAVILY_API_KEY=tvly-mine\n"
    assert local_cleanup.remove_generated_keys(env) == []


def test_removables_and_remove_caches_touch_only_the_given_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORKSHOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("WORKSHOP_CACHE_DIR", str(tmp_path / "cache"))
    settings = config.Settings(_env_file=None)
    (settings.models_dir).mkdir(parents=True)
    (settings.models_dir / "m.gguf").write_bytes(b"x" * 2048)
    (settings.state_dir / "logs").mkdir(parents=True)
    build = tmp_path / "build"
    (build / "executed").mkdir(parents=True)
    keep = tmp_path / "keep.txt"
    keep.write_text("not the workshop's")
    env = tmp_path / ".env"
    env.write_text("WORKSHOP_MODEL_SERVER_API_KEY=sk-local-z\n")
    items = local_cleanup.removables(settings, env, build)
    assert [i.kind for i in items] == ["cache", "cache", "cache", "keys"]
    assert items[0].size_bytes == 2048 and set(items[0].row()) == {"what", "where", "size", "removed by"}
    assert "sk-local-z" not in str([i.row() for i in items])
    removed = local_cleanup.remove_caches(settings, build)
    assert len(removed) == 3
    assert not settings.models_dir.exists() and not settings.state_dir.exists() and not build.exists()
    assert keep.exists() and env.exists()


@pytest.mark.services
def test_remove_caches_refuses_while_the_stack_runs(isolated_settings, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORKSHOP_CACHE_DIR", str(tmp_path / "cache"))  # never the shared model cache
    settings = config.reload_settings()
    stack.ensure("mcp-filesystem")
    try:
        with pytest.raises(RuntimeError, match="stop it first"):
            local_cleanup.remove_caches(settings, build_dir=tmp_path / "no-build")
    finally:
        stack.down()
