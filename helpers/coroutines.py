"""Run a coroutine to completion from synchronous code, also inside a notebook (whose event loop is running)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run factory() to completion, also from inside a running event loop (a notebook cell: in a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
