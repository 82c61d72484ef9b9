"""Run the checks of a target and show them: a table in a notebook, lines in a terminal, the fix under every failure."""

from __future__ import annotations

import argparse
import html
from typing import TYPE_CHECKING

from helpers.local.doctor.aws import eks_checks
from helpers.local.doctor.check import Check
from helpers.local.doctor.local import local_checks

if TYPE_CHECKING:
    from helpers.target import Target


def run(t: Target) -> list[Check]:
    """The checks of the target: this machine for `local`; credentials, region, cluster access, quotas for `eks`."""
    return local_checks() if t.is_local else eks_checks()


def _target(name: str) -> Target:
    """The target to check; settings that fail to load are reported by the checks themselves."""
    from helpers.target import Target

    try:
        return Target(name)
    except Exception:  # noqa: BLE001 - invalid settings: check with defaults, settings_check reports why
        from helpers.config import Settings

        return Target(name, Settings(_env_file=None))


def failed_errors(checks: list[Check]) -> list[Check]:
    """The failed checks that block the workshop (error level)."""
    return [c for c in checks if not c.ok and c.level == "error"]


def _summary(checks: list[Check]) -> str:
    errors = len(failed_errors(checks))
    warnings = sum(1 for c in checks if not c.ok and c.level == "warning")
    passed = sum(1 for c in checks if c.ok)
    return f"{passed} passed, {errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


def report(checks: list[Check]) -> str:
    """A plain-text table: status symbol, name, detail, and the fix under each failed check."""
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"   {'check':<{width}}  detail", f"   {'-' * width}  {'-' * 6}"]
    for c in checks:
        lines.append(f"{c.symbol}  {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"   {'':<{width}}  fix: {c.fix}")
    lines.append("")
    lines.append(_summary(checks))
    return "\n".join(lines)


def to_html(checks: list[Check]) -> str:
    """The checks as an HTML table (fixes under failed rows), for notebooks and the book."""
    colours = {"✔": "#1a7f37", "✘": "#cf222e", "!": "#9a6700"}
    rows = []
    for c in checks:
        fix = (f"<br><span style='color:#57606a'>fix: {html.escape(c.fix)}</span>" if not c.ok and c.fix else "")
        rows.append(f"<tr><td style='color:{colours[c.symbol]};font-weight:bold;text-align:center'>{c.symbol}</td>"
                    f"<td style='text-align:left;white-space:nowrap'>{html.escape(c.name)}</td>"
                    f"<td style='text-align:left'>{html.escape(c.detail)}{fix}</td></tr>")
    return ("<table><thead><tr><th></th><th style='text-align:left'>check</th>"
            "<th style='text-align:left'>detail</th></tr></thead><tbody>" + "".join(rows)
            + f"</tbody></table><p>{html.escape(_summary(checks))}</p>")


def show(checks: list[Check]) -> None:
    """Display the checks as an HTML table in Jupyter, or print the text report elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        display(HTML(to_html(checks)))
    else:
        print(report(checks))


def main(argv: list[str] | None = None) -> int:
    """Command line: print the report for a target; exit 1 when an error-level check failed."""
    parser = argparse.ArgumentParser(prog="python -m helpers.local.doctor", description=__doc__)
    parser.add_argument("--target", choices=("local", "eks"), default="local", help="which target to check")
    args = parser.parse_args(argv)
    print(f"workshop doctor: target {args.target}\n")
    checks = run(_target(args.target))
    print(report(checks))
    return 1 if failed_errors(checks) else 0
