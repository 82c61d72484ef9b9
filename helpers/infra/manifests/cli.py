"""`python -m helpers.infra.manifests render|validate|policy|check`: the checks from a terminal, one line per finding."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from helpers.infra.manifests.objects import FLAVOURS, TARGETS, Finding, load_documents
from helpers.infra.manifests.policy import check, policy
from helpers.infra.manifests.render import render, write
from helpers.infra.manifests.validate import validate


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return overrides


def _print_findings(findings: list[Finding]) -> None:
    for f in findings:
        print(f"{f.object}\t{f.rule}\t{f.message}\n    fix: {f.fix}")
    print(f"{len(findings)} finding(s)")


def main(argv: list[str] | None = None) -> int:
    """Command line: render, validate, policy, check."""
    parser = argparse.ArgumentParser(prog="python -m helpers.infra.manifests", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("render", "validate", "policy", "check"):
        p = sub.add_parser(name)
        p.add_argument("--target", choices=TARGETS, default="eks", help="eks (default) or local")
        p.add_argument(
            "--flavour",
            choices=(*FLAVOURS, "all"),
            default=None,
            help="node provisioning: auto-mode, karpenter, or all (default: settings / auto-mode)",
        )
        p.add_argument("--chapter", action="append", default=None, help="only this chapter (repeatable)")
        p.add_argument(
            "--set",
            dest="sets",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a parameter, e.g. storage_class.default=false",
        )
        if name == "render":
            p.add_argument("--out", required=True, help="folder to write the YAML files into")
        else:
            p.add_argument("paths", nargs="*", help="YAML files or folders to check instead of rendering")
    args = parser.parse_args(argv)
    flavours = list(FLAVOURS) if args.flavour == "all" else [args.flavour]
    overrides = _parse_sets(args.sets)
    if args.command == "render":
        total = 0
        for flavour in flavours:
            manifests = render(args.target, flavour, args.chapter, overrides, include_on_demand=True)
            sub_dir = flavour if args.flavour == "all" else ""
            paths = write(manifests, args.out, sub_dir)
            total += len(paths)
        print(f"wrote {total} manifest(s) to {args.out}")
        return 0
    if args.paths:
        docs = load_documents(args.paths)
    else:
        docs = [
            m.doc for f in flavours for m in render(args.target, f, args.chapter, overrides, include_on_demand=True)
        ]
    run = {"validate": validate, "policy": policy, "check": check}[args.command]
    findings = run(docs)
    _print_findings(findings)
    return 1 if findings else 0
