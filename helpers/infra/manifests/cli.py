"""`python -m helpers.infra.manifests render|validate|policy|check`: the checks from a terminal, one line per finding.

`check` (no paths) renders every chapter for both flavours and runs every offline check on each: the schemas,
the workshop's policy, Karpenter's restricted labels, the upstream CRDs' CEL rules, and the prerequisites one
object has on another (ingress classes, the network-policy switch, the AWS region). Exit 1 on any finding."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.config import Settings
from helpers.infra.manifests.cel import CrdsUnavailable, cel_report
from helpers.infra.manifests.karpenter import RULE as KARPENTER_RULE
from helpers.infra.manifests.objects import FLAVOURS, TARGETS, Finding, load_documents
from helpers.infra.manifests.policy import policy
from helpers.infra.manifests.prerequisites import prerequisites, provided_ingress_classes
from helpers.infra.manifests.render import placeholders, render, write
from helpers.infra.manifests.validate import validate

CHECKS = ("schema", "policy", "karpenter labels", "cel", "prerequisites")


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


def _print_findings(findings: list[Finding], prefix: str = "") -> None:
    for f in findings:
        print(f"{prefix}{f.object}\t{f.rule}\t{f.message}\n    fix: {f.fix}")


@dataclass
class Suite:
    """The findings of every check on one set of objects, by check, and the notes on what was not checked."""

    label: str
    objects: int
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Findings over every check."""
        return sum(len(f) for f in self.findings.values())

    def summary(self) -> str:
        """One line: objects, then findings per check."""
        counts = ", ".join(f"{name} {len(self.findings[name])}" if name in self.findings else f"{name} not run"
                           for name in CHECKS)
        return f"{self.label}: {self.objects} objects; {counts}"


def run_checks(docs: list[dict[str, Any]], label: str, flavour: str | None = None, region: str | None = None,
               crds: str | None = None, settings: Settings | None = None) -> Suite:
    """Every offline check on one set of objects; prerequisites only when the flavour is known."""
    suite = Suite(label, len(docs))
    suite.findings["schema"] = validate(docs)
    rules = policy(docs)
    suite.findings["policy"] = [f for f in rules if f.rule != KARPENTER_RULE]
    suite.findings["karpenter labels"] = [f for f in rules if f.rule == KARPENTER_RULE]
    try:
        report = cel_report(docs, crds)
    except CrdsUnavailable as error:
        suite.notes.append(f"cel: not run: {error.message}. {error.fix}")
    else:
        suite.findings["cel"] = report.findings
        suite.notes.append(f"cel: {report.summary()}")
        suite.notes += [f"cel skipped: {rule} ({reason})" for rule, reason in sorted(report.skipped.items())]
    if flavour:
        from helpers.infra.k8s.operators import operator_releases  # k8s imports this package: import late

        settings = settings or Settings()
        releases = operator_releases(flavour, settings.namespace, settings.cluster_name)
        suite.findings["prerequisites"] = prerequisites(docs, flavour, region, provided_ingress_classes(releases))
    else:
        suite.notes.append("prerequisites: not run (they need one flavour's whole set: pass --flavour)")
    return suite


def _report(suites: list[Suite]) -> int:
    total = 0
    for suite in suites:
        for findings in suite.findings.values():
            _print_findings(findings, f"[{suite.label}] ")
        total += suite.total
    for suite in suites:
        print(suite.summary())
        for note in suite.notes:
            print(f"    {note}")
    print(f"{total} finding(s)")
    return 1 if total else 0


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
            default="all" if name == "check" else None,
            help="node provisioning: auto-mode, karpenter, or all (check: all; else settings / auto-mode)",
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
        if name == "check":
            p.add_argument("--crds", default=None, help="folder of upstream CRDs for the CEL rules (../shared/crds)")
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
        held = {k: v for k, v in placeholders().items() if k not in overrides}
        if args.target == "eks" and held:
            print("placeholders (set the real values with --set before applying these files): "
                  + ", ".join(f"{k}={v}" for k, v in held.items()))
        return 0
    if args.command == "check":
        settings = Settings()
        if args.paths:
            flavour = None if args.flavour == "all" else args.flavour
            docs = load_documents(args.paths)
            label = ", ".join(str(Path(p)) for p in args.paths)
            return _report([run_checks(docs, label, flavour, settings.aws_region, args.crds, settings)])
        suites = [
            run_checks([m.doc for m in render(args.target, f, args.chapter, overrides, include_on_demand=True,
                                              settings=settings)], f, f, settings.aws_region, args.crds, settings)
            for f in flavours
        ]
        return _report(suites)
    if args.paths:
        docs = load_documents(args.paths)
    else:
        docs = [
            m.doc for f in flavours for m in render(args.target, f, args.chapter, overrides, include_on_demand=True)
        ]
    run = {"validate": validate, "policy": policy}[args.command]
    findings = run(docs)
    _print_findings(findings)
    print(f"{len(findings)} finding(s)")
    return 1 if findings else 0

