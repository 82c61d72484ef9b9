"""The two MCP servers: tools over streamable HTTP (through the stack, isolated ports), and their rules in-process."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver.exceptions import ToolError

from helpers import config
from helpers.layers.mcp import deploy
from helpers.layers.mcp import local as mcp_servers
from helpers.local import stack
from helpers.target import Target
from services.mcp import filesystem, web_search
from tests.conftest import free_port

ESCAPES = {
    "absolute": "/etc/passwd",
    "dot-dot": "../../etc/passwd",
    "dot-dot inside": "notes/../../outside.txt",
    "symlink": "escape/passwd",
    "symlinked parent": "escape/deeper/file.txt",
    "encoded": "%2e%2e/%2e%2e/etc/passwd",
    "encoded slash": "..%2f..%2fetc%2fpasswd",
    "NUL": "notes.txt\x00.png",
    "home": "~/.bashrc",
    "backslash": "..\\..\\etc\\passwd",
    "control character": "notes/\nx.txt",
    "lone surrogate": "notes/\udc80.txt",
}
# JSON cannot carry a lone surrogate: the SDK refuses such a request as a parse error before any tool runs.
HTTP_ESCAPES = {label: path for label, path in ESCAPES.items() if label != "lone surrogate"}


# ---------------------------------------------------------------- through the stack, over streamable HTTP


@pytest.fixture
def mcp_stack(isolated_settings, monkeypatch):
    """Both MCP servers started by helpers.local.stack on free loopback ports, offline backend; stopped afterwards."""
    monkeypatch.setenv("WORKSHOP_MCP_WEB_SEARCH_PORT", str(free_port()))
    monkeypatch.setenv("WORKSHOP_MCP_FILESYSTEM_PORT", str(free_port()))
    monkeypatch.setenv("TAVILY_API_KEY", "")  # set but empty: the offline stand-in, whatever .env says
    settings = config.reload_settings()
    for name in (mcp_servers.WEB_SEARCH_SERVICE, mcp_servers.FILESYSTEM_SERVICE):
        assert stack.ensure(name).state == "healthy"
    yield settings
    stack.down()


async def _session_calls(url: str, calls: list[tuple[str, dict]]) -> tuple[list[str], list]:
    """List the tools, then make each call, with the official MCP client."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = [t.name for t in (await session.list_tools()).tools]
        results = [await session.call_tool(name, args) for name, args in calls]
    return tools, results


def call(url: str, calls: list[tuple[str, dict]]) -> tuple[list[str], list]:
    """Synchronous wrapper for the tests."""
    return asyncio.run(_session_calls(url, calls))


@pytest.mark.services
def test_web_search_tools_answer_offline_and_reject_bad_arguments(mcp_stack):
    url = Target("local", mcp_stack).mcp_url("web-search")
    assert url == stack.service_status(mcp_servers.WEB_SEARCH_SERVICE).url
    tools, results = call(url, [
        ("web_search", {"query": "how to make a sourdough starter", "max_results": 3}),
        ("news_search", {"query": "storm warning", "days": 7}),
        ("web_search", {"query": "   "}),
        ("web_search", {"query": "rain", "max_results": 0}),
        ("web_search", {"query": "rain", "max_results": 21}),
        ("news_search", {"query": "rain", "days": 0}),
        ("news_search", {"query": "rain", "days": 366}),
    ])
    assert sorted(tools) == ["news_search", "web_search"]
    web, news, *errors = results
    assert not web.is_error and web.structured_content["backend"] == "offline-corpus"
    assert "offline stand-in" in web.structured_content["note"].lower()
    hits = web.structured_content["results"]
    assert 1 <= len(hits) <= 3 and "sourdough" in hits[0]["title"].lower()
    assert set(hits[0]) >= {"title", "url", "content", "score", "published"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    as_of = web_search.OfflineSearch().as_of
    news_hits = news.structured_content["results"]
    assert news_hits and all(h["published"] >= (as_of - timedelta(days=7)).isoformat() for h in news_hits)
    assert all(e.is_error for e in errors)
    messages = [e.content[0].text for e in errors]
    assert "query is empty" in messages[0]
    assert all("max_results must be a whole number from 1 to 20" in m for m in messages[1:3])
    assert all("days must be a whole number from 1 to 365" in m for m in messages[3:5])
    health = requests.get(url.removesuffix("/mcp") + "/health", timeout=5).json()
    assert health["status"] == "ok" and health["backend"] == "offline-corpus"


@pytest.mark.services
def test_mcp_endpoint_refuses_a_foreign_host_header(mcp_stack):
    """DNS-rebinding protection: a page on another domain cannot drive the loopback server."""
    url = Target("local", mcp_stack).mcp_url("web-search")
    answer = requests.post(url, headers={"Host": "evil.example", "Content-Type": "application/json",
                                         "Accept": "application/json, text/event-stream"},
                           data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), timeout=5)
    assert answer.status_code in (403, 421)


@pytest.mark.services
def test_filesystem_round_trip_and_every_escape_is_rejected(mcp_stack, tmp_path):
    workspace = mcp_stack.mcp_workspace
    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "passwd").write_text("secret outside the workspace")
    (workspace / "escape").symlink_to(outside, target_is_directory=True)
    url = Target("local", mcp_stack).mcp_url("filesystem")
    assert url == stack.service_status(mcp_servers.FILESYSTEM_SERVICE).url
    text = "Zürich, 3 °C\nline two\n"
    tools, results = call(url, [
        ("write_file", {"path": "notes/today.md", "content": text}),
        ("read_file", {"path": "notes/today.md"}),
        ("list_directory", {"path": "notes"}),
        ("file_info", {"path": "notes/today.md"}),
        ("write_file", {"path": "big.txt", "content": "x" * (filesystem.DEFAULT_MAX_WRITE_BYTES + 1)}),
        *[("read_file", {"path": p}) for p in HTTP_ESCAPES.values()],
        ("write_file", {"path": "escape/planted.txt", "content": "x"}),
        ("list_directory", {"path": "escape"}),
        ("file_info", {"path": "/etc"}),
    ])
    assert sorted(tools) == ["file_info", "list_directory", "read_file", "write_file"]
    written, read, listing, info, oversize, *rejected = results
    assert not written.is_error and written.structured_content["bytes_written"] == len(text.encode())
    assert read.content[0].text == text
    assert (workspace / "notes" / "today.md").read_text() == text
    assert [e["name"] for e in listing.structured_content["entries"]] == ["today.md"]
    assert info.structured_content["type"] == "file" and info.structured_content["size"] == len(text.encode())
    assert oversize.is_error and "1,000,000 bytes" in oversize.content[0].text
    assert not (workspace / "big.txt").exists()
    for label, result in zip([*HTTP_ESCAPES, "write via symlink", "list via symlink", "info absolute"], rejected,
                             strict=True):
        assert result.is_error, label
        assert "Rejected path" in result.content[0].text and "Allowed:" in result.content[0].text, label
        assert "secret outside" not in result.content[0].text
    assert not (outside / "planted.txt").exists()


@pytest.mark.services
def test_down_leaves_no_mcp_process(mcp_stack):
    pids = [stack.service_status(n).pid for n in (mcp_servers.WEB_SEARCH_SERVICE, mcp_servers.FILESYSTEM_SERVICE)]
    assert all(pids)
    stopped = stack.down()
    assert set(stopped) >= {mcp_servers.WEB_SEARCH_SERVICE, mcp_servers.FILESYSTEM_SERVICE}
    deadline = time.monotonic() + 5
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < deadline, "an MCP server outlived stack.down()"
        time.sleep(0.1)
    assert stack.running_processes() == []
    for name in (mcp_servers.WEB_SEARCH_SERVICE, mcp_servers.FILESYSTEM_SERVICE):
        assert stack.service_status(name).state == "stopped"
        assert stack.port_owner(stack.get_service(name).port(mcp_stack)) is None


# ---------------------------------------------------------------- the filesystem rules, in-process


@pytest.fixture
def workspace(tmp_path) -> filesystem.Workspace:
    root = tmp_path / "ws"
    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "passwd").write_text("outside")
    root.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return filesystem.Workspace(root, max_write_bytes=100)


@pytest.mark.parametrize("label", list(ESCAPES))
def test_workspace_rejects_escapes_for_every_operation(workspace, label):
    path = ESCAPES[label]
    for operation in (workspace.read_text, workspace.info, workspace.list_dir,
                      lambda p: workspace.write_text(p, "x")):
        with pytest.raises(filesystem.PathRejected, match="Allowed:"):
            operation(path)


def test_workspace_rejects_links_that_leave_it_wherever_they_sit(workspace, tmp_path):
    root = workspace.root
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(tmp_path)                       # a parent folder link, one level down
    (root / "dangling").symlink_to(tmp_path / "not-yet" / "file")    # would create a file outside on write
    (root / "loop").symlink_to(root / "loop")
    (root / "inside").symlink_to(root / "sub")                       # stays inside: allowed
    for path in ("sub/up/outside/passwd", "dangling", "loop/x"):
        with pytest.raises(filesystem.PathRejected):
            workspace.write_text(path, "x")
    assert not (tmp_path / "not-yet").exists()
    assert workspace.write_text("inside/ok.txt", "fine").path == "sub/ok.txt"
    assert workspace.read_text("inside/ok.txt") == "fine"


def test_workspace_refuses_hard_links_and_oversize_content(workspace, tmp_path):
    os.link(tmp_path / "outside" / "passwd", workspace.root / "hard")
    with pytest.raises(filesystem.PathRejected, match="hard-linked"):
        workspace.read_text("hard")
    with pytest.raises(filesystem.PathRejected, match="hard-linked"):
        workspace.write_text("hard", "overwritten")
    assert (tmp_path / "outside" / "passwd").read_text() == "outside"
    with pytest.raises(ToolError, match="accepts files up to 100 bytes"):
        workspace.write_text("big.txt", "é" * 51)  # 102 bytes in UTF-8
    assert workspace.write_text("fits.txt", "x" * 100).bytes_written == 100


def test_workspace_round_trip_listing_and_clear_errors(workspace):
    assert workspace.write_text("a/b/c.txt", "hi").path == "a/b/c.txt"
    assert workspace.read_text("./a/b/c.txt") == "hi"
    assert [(e.name, e.type) for e in workspace.list_dir(".").entries] == [("a", "directory"), ("escape", "symlink")]
    assert workspace.info("a").type == "directory"
    with pytest.raises(ToolError, match="No file or folder"):
        workspace.read_text("missing.txt")
    with pytest.raises(ToolError, match="is a folder"):
        workspace.read_text("a")
    with pytest.raises(ToolError, match="not a folder"):
        workspace.list_dir("a/b/c.txt/d")
    with pytest.raises(filesystem.PathRejected, match="workspace folder itself"):
        workspace.write_text(".", "x")
    (workspace.root / "binary.bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ToolError, match="not UTF-8"):
        workspace.read_text("binary.bin")


# ---------------------------------------------------------------- the web-search backends, in-process


def test_offline_corpus_is_apart_from_the_knowledge_base():
    articles = web_search.load_corpus()
    assert len(articles) >= 30
    assert len({a.url for a in articles}) == len(articles)
    platform_words = {"kubernetes", "eks", "vllm", "karpenter", "litellm", "opensearch", "ray", "mcp", "gpu"}
    for article in articles:
        assert not platform_words & set(web_search.tokenize(f"{article.title} {article.text}")), article.slug


def test_bm25_ranks_the_matching_article_first_and_news_respects_the_window():
    search = web_search.OfflineSearch()
    assert search.search("printing press Gutenberg", 1)[0].title == "Gutenberg and the printing press"
    assert search.search("zzzz qqqq", 5) == []
    news = asyncio.run(search.news("storm", 1)).results
    assert all(h.published >= (search.as_of - timedelta(days=1)).isoformat() for h in news)
    explainer = asyncio.run(search.news("how weather forecasts are made", 7)).results
    assert "How weather forecasts are made" not in [h.title for h in explainer]  # published in 2025


def test_tavily_requests_and_errors_never_show_the_key():
    key = "tvly-" + "k" * 30
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers["Authorization"]
        seen["body"] = json.loads(request.content)
        if seen["body"]["query"] == "fail":
            return httpx.Response(401, json={"detail": "invalid key"})
        return httpx.Response(200, json={"results": [
            {"title": "T", "url": "https://example.org/t", "content": "C", "score": 0.91234, "published_date": "x"}]})

    tavily = web_search.TavilySearch(key, transport=httpx.MockTransport(handler))
    answer = asyncio.run(tavily.news("storm", 3))
    assert seen["auth"] == f"Bearer {key}"
    assert seen["body"] == {"query": "storm", "max_results": web_search.NEWS_RESULTS, "topic": "news", "days": 3,
                            "search_depth": "basic"}
    assert answer.backend == "tavily" and answer.results[0].score == 0.9123 and answer.results[0].published == "x"
    with pytest.raises(ToolError, match="rejected the API key") as error:
        asyncio.run(tavily.web("fail", 5))
    assert key not in str(error.value)
    assert isinstance(web_search.choose_backend("auto", {"TAVILY_API_KEY": ""}), web_search.OfflineSearch)
    assert isinstance(web_search.choose_backend("auto", {"TAVILY_API_KEY": key}), web_search.TavilySearch)
    assert isinstance(web_search.choose_backend("offline", {"TAVILY_API_KEY": key}), web_search.OfflineSearch)


def test_services_use_the_settings_ports_and_workspace(isolated_settings):
    web = stack.get_service(mcp_servers.WEB_SEARCH_SERVICE)
    fs = stack.get_service(mcp_servers.FILESYSTEM_SERVICE)
    t = Target("local", isolated_settings)
    assert web.url(isolated_settings) == t.mcp_url("web-search") == mcp_servers.web_search_url(isolated_settings)
    assert fs.url(isolated_settings) == t.mcp_url("filesystem") == mcp_servers.filesystem_url(isolated_settings)
    argv = fs.argv(isolated_settings)
    assert argv[argv.index("--root") + 1] == str(isolated_settings.mcp_workspace)
    assert Path(isolated_settings.mcp_workspace).is_relative_to(isolated_settings.state_dir)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


# ---------------------------------------------------------------- the eks side: image and Secret


def test_image_requirements_match_the_workshop_lock():
    """The image runs the versions the notebooks and tests run: every pin equals requirements/workshop.txt."""
    import re

    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                found[re.sub(r"[-_.]+", "-", name).lower()] = version
        return found

    root = config.ROOT
    image = pins(root / "manifests" / "07-mcp-tools" / "image" / "requirements.txt")
    lock = pins(root / "requirements" / "workshop.txt")
    assert {"mcp", "uvicorn", "starlette", "httpx", "pydantic"} <= image.keys()
    assert {name: version for name, version in image.items() if lock.get(name) != version} == {}
    dockerfile = deploy.DOCKERFILE.read_text()
    assert "--no-deps" in dockerfile and "pip check" in dockerfile and "USER 10001" in dockerfile
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", dockerfile, re.M)


def test_image_reference_build_command_and_tavily_secret(isolated_settings):
    image = deploy.image_reference("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert image.startswith("123456789012.dkr.ecr.eu-west-1.amazonaws.com/") and not image.endswith(":latest")
    command = deploy.build_command(image)
    assert "linux/amd64,linux/arm64" in command and command[-1] == "."
    eks = Target("eks", isolated_settings)
    assert {m.doc["spec"]["template"]["spec"]["containers"][0]["image"]
            for m in deploy.render(eks, "123456789012.dkr.ecr.eu-west-1.amazonaws.com")
            if m.kind == "Deployment"} == {image}
    secret = deploy.tavily_secret("llm-workshop", "tvly-test")
    assert secret["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llm-eks-workshop"
    assert secret["stringData"] == {"TAVILY_API_KEY": "tvly-test"}
    web = next(m.doc for m in deploy.render(eks) if m.kind == "Deployment" and m.name == "mcp-web-search")
    env = web["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "TAVILY_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": secret["metadata"]["name"], "key": "TAVILY_API_KEY", "optional": True}}}]
