"""The built book in a real browser: every page renders in headless Chromium, no internal link is broken,
and a screenshot of the index is saved to build/book-screenshot.png.

Runs after `make book` (tools/build_book.py); skips with the reason when the site or Chromium is missing.
The site is served from a loopback port by a thread of this process; Chromium may resolve nothing but
127.0.0.1, so the check is offline (the CDN that would serve MathJax is simply unreachable).
"""

from __future__ import annotations

import functools
import struct
import subprocess
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "book" / "_build" / "html"
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "build" / "book-screenshot.png"
WINDOW = (1400, 1000)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # offline: only the loopback server answers
    "--virtual-time-budget=5000",  # let scripts run and the index's meta refresh reach the first page
)  # fmt: skip
LINK_ATTRIBUTES = ("href", "src")
BROWSER_OWN_REQUESTS = {"/favicon.ico"}  # Chromium asks for it by itself; no page links it
# What a page must never show: http.server's error page, Chromium's network error page, a notebook traceback.
ERROR_MARKERS = ("Error response", "Error code: 404", "main-frame-error", "net::ERR_", "output traceback")


def require_site() -> None:
    """Skip (with how to fix it) when the book has not been built."""
    if not (SITE / "index.html").exists():
        pytest.skip("no built book at build/book/_build/html/index.html: run `make book` "
                    "(or `.venv/bin/python tools/build_book.py`) first")


def require_chromium() -> None:
    """Skip (with how to fix it) when Debian's Chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install it with `sudo apt-get install chromium` (Debian/Ubuntu)")


# ---------------------------------------------------------------- reading HTML


@dataclass
class Page:
    """What the checks need from one HTML document."""

    title: str = ""
    h1: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    links: list[tuple[str, str]] = field(default_factory=list)  # (tag, url)
    refresh: str | None = None  # target of a <meta http-equiv="refresh">


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._in: list[str] = []
        self._h1: list[str] | None = None
        self._title_seen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if values.get("id"):
            self.page.ids.add(values["id"])
        if tag == "a" and values.get("name"):
            self.page.ids.add(values["name"])
        for attribute in LINK_ATTRIBUTES:
            if attribute in values:
                self.page.links.append((tag, values[attribute]))
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            self.page.refresh = values.get("content", "").partition("url=")[2].strip() or None
        if tag == "h1":
            self._h1 = []
        if tag == "a" and self._h1 is not None and "headerlink" in values.get("class", ""):
            self._in.append("headerlink")  # the "#" after a heading is not part of its text
        elif tag == "title" and not self._title_seen:  # the document's; SVG icons have <title>s too
            self._title_seen = True
            self._in.append("title")
        elif tag == "a" and self._h1 is not None:
            self._in.append("a")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1" and self._h1 is not None:
            self.page.h1.append(" ".join("".join(self._h1).split()))
            self._h1 = None
        elif tag in ("title", "a") and self._in and self._in[-1] in (tag, "headerlink"):
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if "headerlink" in self._in:
            return
        if self._in and self._in[-1] == "title" and self._h1 is None:
            self.page.title += data
        elif self._h1 is not None:
            self._h1.append(data)


def read_html(text: str) -> Page:
    """Parse one HTML document."""
    reader = _Reader()
    reader.feed(text)
    reader.close()
    reader.page.title = " ".join(reader.page.title.split())
    return reader.page


@functools.cache
def read_file(path: Path) -> Page:
    """Parse one built HTML file (cached: link targets are read many times)."""
    return read_html(path.read_text(encoding="utf-8", errors="replace"))


def site_pages() -> list[Path]:
    """Every HTML page of the built site (theme fragments under _static are not pages)."""
    return sorted(p for p in SITE.rglob("*.html") if "_static" not in p.relative_to(SITE).parts)


def notebook_pages() -> list[Path]:
    """The built page of every notebooks/NN-*.ipynb in the repository (whether or not it exists)."""
    return [SITE / "notebooks" / f"{nb.stem}.html" for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))]


def planned_chapter(url: str) -> str | None:
    """The chapter a link points at when it is planned (helpers/data/chapters.yaml) but not written yet, else None.

    MyST turns a link to a notebook that is not in the book into a bare fragment, `#05-observability.ipynb`:
    the "Next" link of the newest notebook does that until the next one exists."""
    from helpers import chapters

    stem = unquote(urlsplit(url).fragment).removesuffix(".ipynb")
    planned = set(chapters.ids())
    if url.startswith("#") and stem in planned and not (NOTEBOOKS / f"{stem}.ipynb").exists():
        return stem
    return None


def broken_link(page: Path, url: str) -> str | None:
    """Why an internal link of a page is broken, or None (external links and bare '#' are not checked)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith("//"):
        return None  # http(s), mailto, data, javascript: not this site's
    fragment = unquote(parts.fragment)
    if not parts.path:
        target = page
    else:
        target = (page.parent / unquote(parts.path)).resolve()
        if parts.path.endswith("/"):
            target = target / "index.html"
        if SITE.resolve() not in target.parents:
            return f"{url} leaves the site"
        if not target.is_file():
            return f"{url}: no file {target.relative_to(SITE.resolve())}"
    if fragment and target.suffix == ".html" and fragment not in read_file(target).ids:
        return f"{url}: no id {fragment!r} in {target.relative_to(SITE.resolve())}"
    return None


# ---------------------------------------------------------------- serving and browsing


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves the site and records every request's path and status (nothing is printed)."""

    requests: list[tuple[str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.requests.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


@dataclass
class Site:
    """The book served on a loopback port, and the requests the browser made."""

    base: str
    requests: list[tuple[str, int]]

    def url(self, page: Path) -> str:
        """The URL of a built page."""
        return f"{self.base}/{page.relative_to(SITE).as_posix()}"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The built book served by http.server from a thread, on a free loopback port."""
    require_site()
    requests: list[tuple[str, int]] = []
    handler = functools.partial(type("Handler", (RecordingHandler,), {"requests": requests}), directory=str(SITE))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once with its own profile folder."""
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def dump_dom(site: Site, page: Path, profile: Path) -> str:
    """The page's DOM after Chromium loaded it (and ran its scripts)."""
    proc = chromium(["--dump-dom", site.url(page)], profile)
    assert proc.returncode == 0, f"chromium failed on {page.name}: {proc.stderr[-2000:]}"
    return proc.stdout


def expected(page: Path) -> Page:
    """The title and h1 a page must show: its own, or (for a redirect like index.html) its target's."""
    built = read_file(page)
    if built.refresh:
        return read_file((page.parent / built.refresh).resolve())
    return built


# ---------------------------------------------------------------- the checks


def test_every_notebook_has_a_page() -> None:
    """Each notebooks/NN-*.ipynb became a page of the book (the table of contents is generated)."""
    require_site()
    missing = [p.name for p in notebook_pages() if not p.exists()]
    assert not missing, f"notebooks without a page: {missing}; rebuild the book with `make book`"


def test_no_broken_internal_link() -> None:
    """Every relative or same-site href/src of every page points at a file, and #fragments at an id."""
    require_site()
    pages = site_pages()
    assert len(pages) >= 3, f"only {len(pages)} HTML pages under {SITE}"
    broken, waiting = [], set()
    for p in pages:
        for tag, url in read_file(p).links:
            if (why := broken_link(p, url)) is None:
                continue
            if stem := planned_chapter(url):
                waiting.add(f"{p.relative_to(SITE)} -> {stem}")
            else:
                broken.append(f"{p.relative_to(SITE)} <{tag}> {why}")
    if waiting:
        warnings.warn(f"links to chapters not written yet (fine until they are): {sorted(waiting)}", stacklevel=1)
    assert not broken, f"{len(broken)} broken internal link(s):\n" + "\n".join(sorted(set(broken)))


def pages_to_open() -> list[Path]:
    """The index, every notebook's page, and the other pages of the book (not the generated index/search)."""
    skip = {SITE / n for n in ("index.html", "intro.html", "genindex.html", "search.html")}
    notebooks = notebook_pages()
    others = [p for p in site_pages() if p not in skip and p not in notebooks and p.parent == SITE]
    return [SITE / "index.html", *notebooks, *others]


def render_problems(site: Site, page: Path, profile: Path) -> list[str]:
    """What is wrong with one page as Chromium shows it (empty when nothing)."""
    name = page.relative_to(SITE)
    if not page.exists():
        return [f"{name}: not built (run `make book`)"]
    want = expected(page)
    dom = dump_dom(site, page, profile)
    got = read_html(dom)
    problems = []
    if got.title != want.title:
        problems.append(f"{name}: title {got.title!r}, expected {want.title!r}")
    if not got.h1 or got.h1[0] != want.h1[0]:
        problems.append(f"{name}: h1 {got.h1[:1]!r}, expected {want.h1[:1]!r}")
    return problems + [f"{name}: shows {marker!r}" for marker in ERROR_MARKERS if marker in dom]


def test_pages_render_in_chromium(site: Site, tmp_path: Path) -> None:
    """The index, every notebook page and the other pages load in headless Chromium with their title and
    heading, no error page, no traceback; and every file the browser asked the site for was there."""
    require_chromium()
    pages = pages_to_open()
    with ThreadPoolExecutor(max_workers=2) as pool:  # two browsers at a time: start-up dominates
        found = pool.map(lambda ip: render_problems(site, ip[1], tmp_path / f"profile-{ip[0]}"), enumerate(pages))
        problems = [problem for page_problems in found for problem in page_problems]
    assert not problems, "\n".join(problems)
    missing = sorted({path for path, status in site.requests if status >= 400 and path not in BROWSER_OWN_REQUESTS})
    assert not missing, f"the browser asked for files the site does not have: {missing}"
    opened = {path.split("?")[0] for path, _status in site.requests}
    assert {"/" + p.relative_to(SITE).as_posix() for p in pages} <= opened


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_screenshot_of_the_index(site: Site, tmp_path: Path) -> None:
    """A screenshot of the index as a reader first sees it, saved to build/book-screenshot.png."""
    require_chromium()
    SCREENSHOT.unlink(missing_ok=True)
    proc = chromium([f"--screenshot={SCREENSHOT}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                     site.url(SITE / "index.html")], tmp_path / "profile")
    assert proc.returncode == 0 and SCREENSHOT.exists(), f"no screenshot: {proc.stderr[-2000:]}"
    assert png_size(SCREENSHOT) == WINDOW
    assert SCREENSHOT.stat().st_size > 20_000, "the screenshot is nearly empty (a blank page?)"
