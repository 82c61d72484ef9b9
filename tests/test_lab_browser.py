"""A learner's browser: `make lab`'s JupyterLab in headless Chromium, notebook 00 run through the UI, no cell in error.

JupyterLab is started the way `make lab` starts it (loopback only), on a copy of the notebooks folder (the UI
autosaves: the committed notebooks must stay as they are), plus a fixed token, a free port and
`expose_app_in_browser`, so the test can drive the very commands a learner's clicks run (open the notebook,
"Run All Cells") over the Chrome DevTools Protocol. The kernel gets its own state folder and free ports, so the
model server it starts is the test's own; it is stopped at the end. A screenshot is kept as
build/lab-screenshot.png. Skips with the reason when Chromium is not installed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "build" / "lab-screenshot.png"
NOTEBOOK = "00-welcome.ipynb"
RUN_TIMEOUT_S = 600  # the first request may start the model server (seconds) and load the model


class DevTools:
    """The smallest Chrome DevTools Protocol client: evaluate JavaScript, take a screenshot."""

    def __init__(self, websocket_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        """Close the connection."""
        self.ws.close()


def wait_until(condition: Any, timeout: float, what: str, poll: float = 0.5) -> Any:
    """Poll until condition() is truthy; fail the test saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """JupyterLab as `make lab` starts it (loopback, notebooks folder), on a free port with a known token."""
    port, token = free_port(), secrets.token_hex(16)
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    env = {**os.environ, "WORKSHOP_STATE_DIR": str(tmp_path / "state"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    for name in ("MODEL_SERVER", "EMBEDDING_SERVER", "GATEWAY", "REDIS", "SERVE", "MCP_WEB_SEARCH",
                 "MCP_FILESYSTEM", "AGENT_API", "PHOENIX", "PHOENIX_GRPC"):
        env[f"WORKSHOP_{name}_PORT"] = str(free_port())
    argv = [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1", f"--notebook-dir={notebooks}",
            "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
            "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:  # CI runs as root; JupyterLab refuses root unless told
        argv.append("--allow-root")
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/api/status?token={token}"), 60, "JupyterLab to answer")
        yield base, token, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run([sys.executable, "-m", "helpers.local.stack", "down"], env=env, cwd=ROOT,
                       capture_output=True, timeout=120)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    """Headless Chromium with a remote-debugging port, offline but for loopback, and a new empty profile."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install it with `sudo apt-get install chromium` (Debian/Ubuntu)")
    port = free_port()
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000", "about:blank"]
    browser = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pages = wait_until(lambda: _pages(port), 30, "Chromium's DevTools endpoint")
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()


def _pages(port: int) -> list[dict[str, Any]] | None:
    try:
        targets = requests.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
    except (requests.RequestException, ValueError):
        return None
    return [t for t in targets if t.get("type") == "page"] or None


CELLS = """(() => {
  const panel = window.__notebook;
  if (!panel || !panel.content || !panel.content.model) return null;
  const cells = [];
  for (const cell of panel.content.model.cells) {
    const json = cell.toJSON();
    cells.push({type: json.cell_type, count: json.execution_count ?? null,
                errors: (json.outputs || []).filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)});
  }
  return {cells, busy: panel.sessionContext.session?.kernel?.status ?? 'none'};
})()"""


def test_notebook_00_runs_in_jupyterlab_through_the_ui_with_no_cell_in_error(lab, chromium: DevTools) -> None:
    base, token, _env = lab
    chromium.call("Page.enable")
    chromium.call("Page.navigate", url=f"{base}/lab?token={token}")
    wait_until(lambda: chromium.evaluate("!!(window.jupyterapp && window.jupyterapp.started)"), 90,
               "the JupyterLab application to start")
    chromium.evaluate("window.jupyterapp.started.then(() => true)")
    # what double-clicking the file does; a headless window has no focus, so the panel is activated by id
    chromium.evaluate(f"window.jupyterapp.commands.execute('docmanager:open', {{path: '{NOTEBOOK}'}})"
                      ".then(w => {{ window.__notebook = w; window.jupyterapp.shell.activateById(w.id); return true; }})")
    wait_until(lambda: chromium.evaluate("window.__notebook.sessionContext.session?.kernel?.status === 'idle'"),
               120, "the notebook's kernel to be idle")
    # Run > Run All Cells (not awaited: its promise settles only when every cell has run)
    chromium.evaluate("(() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; })()")

    def finished() -> dict[str, Any] | None:
        state = chromium.evaluate(CELLS)
        code = [c for c in state["cells"] if c["type"] == "code"] if state else []
        done = code and all(c["count"] is not None for c in code) and state["busy"] == "idle"
        return state if done else None

    state = wait_until(finished, RUN_TIMEOUT_S, f"every cell of {NOTEBOOK} to run", poll=2)
    shot = chromium.call("Page.captureScreenshot", format="png")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    code = [c for c in state["cells"] if c["type"] == "code"]
    errors = [e for c in code for e in c["errors"]]
    assert not errors, f"cells in error in the browser: {errors} (screenshot: {SCREENSHOT})"
    assert len(code) >= 5 and len({c["count"] for c in code}) == len(code), "every code cell ran once, in order"
