"""One preflight finding (what was checked, whether it passed, what was seen, the fix), with paths and secrets scrubbed."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from helpers.config import ROOT

Level = Literal["error", "warning"]


# Decimal units on purpose: a laptop sold with 8 GiB reports ~7.6 GiB total, which is still 8.2 GB.
GB = 1_000_000_000


@dataclass
class Check:
    """One preflight finding: what was checked, whether it passed, what was seen, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    level: Level = "error"

    def __post_init__(self) -> None:
        # every message is shown to learners and committed in notebook outputs: no machine paths
        self.detail = scrub(self.detail)
        self.fix = scrub(self.fix)

    @property
    def symbol(self) -> str:
        """✔ passed, ✘ failed error, ! failed warning."""
        if self.ok:
            return "✔"
        return "✘" if self.level == "error" else "!"


_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/", "/bin/", "/sbin/", "/lib/")


_ABS_PATH = re.compile(r"(?<![\w.:/~\-])/(?:[\w.+@\-]+/)*[\w.+@\-]+/?")


def display_path(path: Path | str) -> str:
    """A path as it may be shown: relative to the project, `~/...` under home, else only its last part."""
    text = str(path)
    for root in _project_roots():
        if text == root:
            return "."
        if text.startswith(root + "/"):
            return text[len(root) + 1:]
    for home in _home_dirs():
        if text == home:
            return "~"
        if text.startswith(home + "/"):
            return "~/" + text[len(home) + 1:]
    if text.startswith("/") and not text.startswith(_SYSTEM_PREFIXES):
        return "…/" + Path(text).name
    return text


def _project_roots() -> list[str]:
    return sorted({str(ROOT), os.path.realpath(ROOT)}, key=len, reverse=True)


def _home_dirs() -> list[str]:
    home = Path.home()
    return sorted({str(home), os.path.realpath(home)}, key=len, reverse=True)


def scrub(text: str) -> str:
    """Rewrite every absolute path in a message with display_path."""
    return _ABS_PATH.sub(lambda m: display_path(m.group(0)), text)


def gb(n: float) -> str:
    return f"{n / GB:.1f} GB"
