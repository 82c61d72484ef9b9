"""A notebook's set-up in one call, and the few things every notebook shows the same way.

    from helpers.workshop import setup, table, yaml_block, self_check
    t = setup(TARGET, "04-gateway")

`setup` validates the target, starts the local services the chapter needs (helpers/data/chapters.yaml) or
probes the cluster and the AWS account (eks), registers the `%%on` cell magic, prints one banner line, and
returns the Target that every later cell asks for endpoints, rendering, the cluster and apply.
"""

from __future__ import annotations

from helpers import chapters
from helpers.config import get_settings
from helpers.notebook import code_block, register_magics, self_check, table, yaml_block
from helpers.target import Target

__all__ = ["setup", "table", "yaml_block", "code_block", "self_check", "Target"]


def setup(target: str, chapter: str, flavour: str | None = None, quiet: bool = False) -> Target:
    """Build the notebook's Target, make the chapter runnable on it, print the banner, and return the Target."""
    t = Target(target, get_settings(), chapters.get(chapter), flavour)
    services = ensure_services(t)
    if t.is_eks:
        _ = t.aws, t.cluster  # probe both once, now: the banner says what the eks cells will find
    register_magics(t)
    if not quiet:
        print(t.banner(services))
    return t


def ensure_services(t: Target) -> list[str]:
    """Stop what the chapter must not find running, then start (or find healthy) what it needs; return the names."""
    from helpers.local import stack

    assert t.chapter is not None
    for name in t.chapter.stops:
        stack.stop(name)
    needed = list(t.chapter.services(t.name))
    for name in needed:
        stack.ensure(name)
    return needed
