"""MCP server with `web_search` and `news_search`: Tavily when TAVILY_API_KEY is set, else an offline stand-in.

The offline stand-in ranks a small local corpus (`offline_corpus/`, kept apart from the knowledge base)
with BM25, so the workshop and its tests run without internet access and give the same answers every time.

    python -m services.mcp.web_search --port 18086      # endpoint http://127.0.0.1:18086/mcp
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from services.mcp import http_app

CORPUS_DIR = Path(__file__).resolve().parent / "offline_corpus"
TAVILY_URL = "https://api.tavily.com/search"
TAVILY_KEY_VARIABLE = "TAVILY_API_KEY"
OFFLINE = "offline-corpus"
TAVILY = "tavily"
MAX_QUERY_CHARS = 400
MAX_RESULTS_RANGE = (1, 20)
DAYS_RANGE = (1, 365)
NEWS_RESULTS = 5  # news_search returns at most this many articles
STOPWORDS = frozenset(
    "a an and are as at be by for from has have how in is it its of on or that the this to was what when where "
    "which who why will with do does did i me my you your we our there their they them".split()
)


class SearchResult(BaseModel):
    """One search hit."""

    title: str
    url: str
    content: str
    score: float = Field(description="relevance, higher is better; only comparable within one answer")
    published: str | None = Field(default=None, description="publication date, when known (always for news)")


class SearchResponse(BaseModel):
    """What both tools return: which backend answered, what it is, and the hits, best first."""

    backend: str = Field(description="'tavily' (live web) or 'offline-corpus' (the offline stand-in)")
    note: str
    query: str
    results: list[SearchResult]


# ---------------------------------------------------------------- the offline corpus and BM25


@dataclass(frozen=True)
class Article:
    """One document of the offline corpus."""

    slug: str
    title: str
    topic: str
    published: date
    text: str

    @property
    def url(self) -> str:
        """A stable identifier in the reserved .invalid domain: it names the article and never resolves."""
        return f"https://offline-corpus.invalid/{self.topic}/{self.slug}"


def parse_article(path: Path) -> Article:
    """Read one corpus file: a `---` front matter block (title, published, topic) and the text."""
    raw = path.read_text(encoding="utf-8")
    parts = raw.split("---", 2)
    if len(parts) != 3 or parts[0].strip():
        raise ValueError(f"{path.name}: expected a front matter block between '---' lines at the top")
    fields = {}
    for line in parts[1].strip().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    missing = {"title", "published", "topic"} - fields.keys()
    if missing:
        raise ValueError(f"{path.name}: front matter lacks {', '.join(sorted(missing))}")
    return Article(slug=path.stem, title=fields["title"], topic=fields["topic"],
                   published=date.fromisoformat(fields["published"]), text=" ".join(parts[2].split()))


def load_corpus(folder: Path = CORPUS_DIR) -> list[Article]:
    """Every article of the offline corpus (README.md excluded), in file-name order."""
    articles = [parse_article(p) for p in sorted(folder.glob("*.md")) if p.name != "README.md"]
    if not articles:
        raise ValueError(f"The offline corpus at {folder} holds no articles.")
    return articles


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stop words; a trailing plural 's' is dropped (rainbows -> rainbow)."""
    tokens = []
    for word in re.findall(r"\w+", text.casefold()):
        if word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        tokens.append(word)
    return tokens


class BM25:
    """Okapi BM25 ranking over a fixed list of texts (k1 and b as in Robertson and Zaragoza, 2009)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(tokenize(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg_length = sum(self.lengths) / max(1, len(self.docs))
        frequency = Counter(term for d in self.docs for term in d)  # in how many documents each term occurs
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    def scores(self, query: str) -> list[float]:
        """The BM25 score of every text for the query (0 where no query term occurs)."""
        terms = set(tokenize(query))
        result = []
        for doc, length in zip(self.docs, self.lengths, strict=True):
            score = 0.0
            for term in terms & doc.keys():
                tf = doc[term]
                norm = tf + self.k1 * (1 - self.b + self.b * length / self.avg_length)
                score += self.idf[term] * tf * (self.k1 + 1) / norm
            result.append(score)
        return result


class OfflineSearch:
    """The offline stand-in for a web search: BM25 over the local corpus, frozen on its newest article's date."""

    name = OFFLINE

    def __init__(self, articles: Iterable[Article] | None = None) -> None:
        self.articles = list(articles) if articles is not None else load_corpus()
        # the title counts twice: a query word in the headline says more than one in the body
        self.index = BM25([f"{a.title} {a.title} {a.text}" for a in self.articles])
        self.as_of = max(a.published for a in self.articles)

    def describe(self) -> str:
        """What this backend is, in one sentence (returned with every answer)."""
        return (f"Offline stand-in for a live web search: BM25 over {len(self.articles)} local articles "
                f"(services/mcp/offline_corpus; the news items are invented for the workshop), "
                f"frozen on {self.as_of.isoformat()}. Set TAVILY_API_KEY for live web results.")

    def search(self, query: str, limit: int, since: date | None = None) -> list[SearchResult]:
        """The best `limit` articles matching the query (published on or after `since`, when given)."""
        ranked = sorted(zip(self.index.scores(query), range(len(self.articles)), strict=True),
                        key=lambda pair: (-pair[0], pair[1]))
        hits = []
        for score, i in ranked:
            article = self.articles[i]
            if score <= 0 or (since and article.published < since):
                continue
            hits.append(SearchResult(title=article.title, url=article.url, content=article.text,
                                     score=round(score, 4), published=article.published.isoformat()))
            if len(hits) == limit:
                break
        return hits

    async def web(self, query: str, max_results: int) -> SearchResponse:
        """web_search over the corpus."""
        return SearchResponse(backend=self.name, note=self.describe(), query=query,
                              results=self.search(query, max_results))

    async def news(self, query: str, days: int) -> SearchResponse:
        """news_search over the corpus: articles published within `days` days of the corpus date."""
        since = self.as_of - timedelta(days=days)
        note = (f"{self.describe()} news_search counts {days} day(s) back from {self.as_of.isoformat()}: "
                f"articles published on or after {since.isoformat()}.")
        return SearchResponse(backend=self.name, note=note, query=query,
                              results=self.search(query, NEWS_RESULTS, since=since))


# ---------------------------------------------------------------- Tavily


class TavilySearch:
    """Live web search through Tavily's REST API (POST /search, bearer key); the key is never logged or returned."""

    name = TAVILY

    def __init__(self, api_key: str, url: str = TAVILY_URL, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 20.0) -> None:
        if not api_key:
            raise ValueError(f"{TAVILY_KEY_VARIABLE} is empty")
        self._api_key = api_key
        self.url = url
        self._transport = transport
        self.timeout = timeout

    def describe(self) -> str:
        """What this backend is."""
        return "Live web search by Tavily (api.tavily.com)."

    async def _post(self, body: dict[str, Any]) -> list[SearchResult]:
        headers = {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=self.timeout) as client:
                response = await client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as error:
            raise ToolError(f"Tavily could not be reached ({type(error).__name__}). Check the network and "
                            f"retry; without internet access unset {TAVILY_KEY_VARIABLE} to use the offline "
                            f"stand-in.") from None
        if response.status_code in (401, 403):
            raise ToolError(f"Tavily rejected the API key (HTTP {response.status_code}). Check "
                            f"{TAVILY_KEY_VARIABLE} (it starts with 'tvly-') and restart the server.")
        if response.status_code in (429, 432, 433):
            raise ToolError(f"Tavily's usage limit is reached (HTTP {response.status_code}). Wait, or check "
                            f"the plan of this API key.")
        if response.status_code >= 400:
            raise ToolError(f"Tavily answered HTTP {response.status_code}: {response.text[:200]}")
        results = []
        for item in response.json().get("results") or []:
            results.append(SearchResult(title=str(item.get("title") or ""), url=str(item.get("url") or ""),
                                        content=str(item.get("content") or ""),
                                        score=round(float(item.get("score") or 0.0), 4),
                                        published=item.get("published_date")))
        return results

    async def web(self, query: str, max_results: int) -> SearchResponse:
        """web_search through Tavily (topic general)."""
        results = await self._post({"query": query, "max_results": max_results, "topic": "general",
                                    "search_depth": "basic"})
        return SearchResponse(backend=self.name, note=self.describe(), query=query, results=results)

    async def news(self, query: str, days: int) -> SearchResponse:
        """news_search through Tavily (topic news, the last `days` days)."""
        results = await self._post({"query": query, "max_results": NEWS_RESULTS, "topic": "news", "days": days,
                                    "search_depth": "basic"})
        return SearchResponse(backend=self.name, note=f"{self.describe()} News of the last {days} day(s).",
                              query=query, results=results)


class SearchBackend(Protocol):
    """What the tools need from a backend."""

    name: str

    def describe(self) -> str: ...

    async def web(self, query: str, max_results: int) -> SearchResponse: ...

    async def news(self, query: str, days: int) -> SearchResponse: ...


def choose_backend(choice: str = "auto", environ: dict[str, str] | None = None) -> SearchBackend:
    """Tavily when TAVILY_API_KEY is set (choice 'auto' or 'tavily'), else the offline stand-in."""
    key = (os.environ if environ is None else environ).get(TAVILY_KEY_VARIABLE, "").strip()
    if choice == "tavily" and not key:
        raise ValueError(f"--backend tavily needs {TAVILY_KEY_VARIABLE} in the environment.")
    if choice in ("auto", "tavily") and key:
        return TavilySearch(key)
    return OfflineSearch()


# ---------------------------------------------------------------- argument checks (clear tool errors)


def check_query(query: str) -> str:
    """The query stripped; a clear error when it is empty or too long."""
    query = (query or "").strip()
    if not query:
        raise ToolError('query is empty: pass the words to search for, e.g. query="storm warning this weekend".')
    if len(query) > MAX_QUERY_CHARS:
        raise ToolError(f"query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}. Shorten it.")
    return query


def check_range(name: str, value: int, bounds: tuple[int, int]) -> int:
    """The value when it lies within bounds (inclusive); a clear error naming the allowed range otherwise."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ToolError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
    return value


# ---------------------------------------------------------------- the MCP server


def build_server(backend: SearchBackend | None = None) -> MCPServer:
    """The web-search MCP server with its two tools and GET /health."""
    backend = backend or choose_backend()
    server = MCPServer(
        "web-search",
        instructions="Search the web for information that is not in the knowledge base: current events, news, "
                     "weather, sports, general knowledge. Every answer names its backend: 'tavily' (live web) "
                     "or 'offline-corpus' (a small local stand-in).",
    )

    @server.tool()
    async def web_search(
        query: Annotated[str, Field(description="what to search for, in plain words")],
        max_results: Annotated[int, Field(description="how many results to return, 1 to 20")] = 5,
    ) -> SearchResponse:
        """Search the web; returns titles, URLs, text and a relevance score, best first."""
        return await backend.web(check_query(query), check_range("max_results", max_results, MAX_RESULTS_RANGE))

    @server.tool()
    async def news_search(
        query: Annotated[str, Field(description="what to search for, in plain words")],
        days: Annotated[int, Field(description="only news published in the last N days, 1 to 365")] = 7,
    ) -> SearchResponse:
        """Search recent news; every result carries its publication date."""
        return await backend.news(check_query(query), check_range("days", days, DAYS_RANGE))

    def health() -> dict[str, Any]:
        details: dict[str, Any] = {"backend": backend.name}
        if isinstance(backend, OfflineSearch):
            details.update(articles=len(backend.articles), as_of=backend.as_of.isoformat())
        return details

    http_app.add_health_route(server, health)
    return server


def main(argv: list[str] | None = None) -> int:
    """Command line: serve the web-search MCP server over streamable HTTP at /mcp."""
    parser = argparse.ArgumentParser(prog="python -m services.mcp.web_search",
                                     description=__doc__.split("\n")[0])
    http_app.add_serving_arguments(parser)
    parser.add_argument("--backend", choices=["auto", "offline", "tavily"], default="auto",
                        help="auto: Tavily when TAVILY_API_KEY is set, else the offline corpus")
    args = parser.parse_args(argv)
    http_app.configure_logging(args.log_level)
    try:
        backend = choose_backend(args.backend)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"web-search MCP server: backend {backend.name} ({backend.describe()}) "
          f"at http://{args.host}:{args.port}{http_app.MCP_PATH}", flush=True)
    app = http_app.http_app(build_server(backend), args.host, args.allow_host)
    http_app.serve(app, args.host, args.port, args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
