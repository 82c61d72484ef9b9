"""The whole eks path in one command, for an instructor preparing a cluster before a class.

    python tools/eks.py plan [--flavour auto-mode|karpenter]   offline: render and check every chapter, print the
                                                               ordered plan and the cost per hour
    python tools/eks.py run [--billable NAME ...]              execute notebooks 01-10 with TARGET=eks, in order,
                                                               against the current kubeconfig and AWS profile

`run` first asks the target what the notebooks' set-up would find: without AWS credentials or a cluster it stops
at once, with the reason and the fix, before any notebook runs. Switches whose parameter comment says "billable"
(CREATE_CLUSTER, DEPLOY_OPENSEARCH, ...) are passed as False unless named with --billable (make eks BILLABLE=...).
It stops at the first failing notebook, prints the failing cell's error (a workshop error carries its fix), and
leaves every executed notebook under build/eks/.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from run_notebooks import execute, notebooks  # noqa: E402 - tools/ is not a package

OUT = ROOT / "build" / "eks"
SWITCH = re.compile(r"^(?P<name>[A-Z_][A-Z0-9_]*)\s*=\s*(?:True|False)\s*#(?P<comment>.*)$", re.M)


def billable_switches(path: Path) -> list[str]:
    """The notebook's boolean parameters whose comment says they cost money (the notebook is the one source)."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return [m["name"] for m in SWITCH.finditer(cell.source) if "billable" in m["comment"].lower()]


def eks_notebooks() -> list[Path]:
    """Notebooks 01-10: everything after the welcome."""
    return [nb for nb in notebooks() if not nb.name.startswith("00-")]


def plan(flavour: str | None) -> int:
    """Render and check every chapter for the flavour; print the ordered plan and the cost per hour."""
    from helpers.config import Settings
    from helpers.infra import aws, manifests, scheduling, teardown
    from helpers.target import Target

    t = Target("eks", Settings(), flavour=flavour)
    objects = t.render_all()
    findings = manifests.check(objects)
    print(f"eks plan · flavour {t.flavour} · region {t.settings.aws_region} · cluster {t.settings.cluster_name}\n")
    on_request = [m for m in t.render_all(include_on_demand=True) if m.template.startswith(manifests.ON_DEMAND_DIR)]
    for chapter in manifests.chapters():
        mine = [m.ref for m in objects if m.chapter == chapter]
        extra = [m.ref for m in on_request if m.chapter == chapter]
        print(f"{chapter}: " + (", ".join(mine) or "no objects by default")
              + (f"; on request: {', '.join(extra)}" if extra else ""))
    releases = [e for e in teardown.helm_entries(t.flavour, t.settings) if e["kind"] in teardown.HELM_KINDS]
    print("\nHelm releases: " + ", ".join(f"{e['metadata']['name']} ({e['metadata'].get('namespace')})"
                                          for e in releases))
    print("AWS resources: " + ", ".join(f"{e['kind']} {e['metadata']['name']}" for e in teardown.aws_entries(t.settings)))
    report = scheduling.platform_cost(scheduling.platform_workloads(objects), scheduling.node_pools(t),
                                      aws.load_instance_types())
    print(f"\ncost per hour, everything running at its minimum replicas: ${report.total}"
          + (f" (no node pool for {', '.join(report.unplaced)})" if report.unplaced else ""))
    for f in findings:
        print(f"{f.object}\t{f.rule}\t{f.message}\n    fix: {f.fix}")
    print(f"{len(objects)} objects, {len(findings)} finding(s)")
    return 1 if findings or report.unplaced else 0


def preflight(flavour: str | None) -> str | None:
    """Why the eks run cannot start (no credentials, no cluster), with the fix; None when it can."""
    from helpers.target import Target

    t = Target("eks", flavour=flavour)
    missing = [c for c in (t.aws, t.cluster) if not c]
    if not missing:
        return None
    return "\n".join(f"No {c.what}: {c.reason.message}\nFix: {c.reason.fix}" for c in missing if c.reason)


def run(flavour: str | None, billable: list[str]) -> int:
    """Execute notebooks 01-10 with TARGET=eks in order; stop at the first failure with its error and fix."""
    import papermill

    reason = preflight(flavour)
    if reason:
        print(f"make eks: not started, nothing was run or billed.\n{reason}", file=sys.stderr)
        return 2
    known = {name for nb in eks_notebooks() for name in billable_switches(nb)}
    unknown = sorted(set(billable) - known)
    if unknown:
        print(f"make eks: unknown billable switch(es) {unknown}; the notebooks have {sorted(known)}", file=sys.stderr)
        return 2
    for nb in eks_notebooks():
        params = {name: name in billable for name in billable_switches(nb)}
        if flavour and nb.stem in ("01-cluster-and-nodepools", "10-cleanup"):
            params["FLAVOUR"] = flavour
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        print(f"{nb.stem}: running ({shown})", flush=True)
        started = time.monotonic()
        try:
            execute(nb, OUT, target="eks", extra=params)
        except papermill.PapermillExecutionError as error:
            print(f"{nb.stem} failed in cell {error.exec_count}: {error.ename}: {error.evalue}\n"
                  f"The executed notebook, with the whole error, is {(OUT / nb.name).relative_to(ROOT)}.",
                  file=sys.stderr)
            return 1
        print(f"{nb.stem}: done in {time.monotonic() - started:.0f} s", flush=True)
    print(f"every notebook ran; executed copies in {OUT.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: plan or run."""
    parser = argparse.ArgumentParser(prog="python tools/eks.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("plan", "run"):
        p = sub.add_parser(name)
        p.add_argument("--flavour", choices=("auto-mode", "karpenter"), default=None)
    sub.choices["run"].add_argument("--billable", nargs="*", default=[], metavar="SWITCH",
                                    help="billable switches to turn on, e.g. CREATE_CLUSTER DEPLOY_OPENSEARCH")
    args = parser.parse_args(argv)
    if args.command == "plan":
        return plan(args.flavour)
    return run(args.flavour, args.billable)


if __name__ == "__main__":
    sys.exit(main())
