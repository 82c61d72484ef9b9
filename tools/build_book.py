"""Build the Jupyter Book (offline) from book/ pages and the executed notebooks into build/book/.

Staging (build/book-src) holds book/ as written plus what is computed at build time, so no figure in the
book is typed by hand and no page links to a notebook that does not exist yet:

- `_toc.yml`: intro, architecture, every `notebooks/NN-*.ipynb` present (in chapter order, see
  helpers/data/chapters.yaml), glossary, troubleshooting, cost. There is no _toc.yml in book/: this is the only one.
- `_config.yml`: book/_config.yml plus MyST substitutions: `{{ nb02 }}` is a link to notebook 02 when it
  exists (else its name in plain text), `{{ cost_total }}` and friends are computed by helpers.infra.scheduling.
- `generated/*.md`: tables the pages pull in with `{include}`: the chapters, the local services, the hourly
  cost part by part (`scheduling.platform_cost().rows()`), what each notebook adds to it, the spend caps,
  how each pool scales down, the probes of every server, and the Pending-pod decoder on real event texts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "book-src"
OUT = ROOT / "build" / "book"
EXECUTED = ROOT / "build" / "executed"
NOTEBOOKS = ROOT / "notebooks"
GENERATED = "generated"  # folder inside the staged source; its pages are only ever included, never listed
HTML = OUT / "_build" / "html"

PAGES_BEFORE = ("architecture",)
PAGES_AFTER = ("glossary", "troubleshooting", "cost")

# Event messages as the kube-scheduler, Karpenter and EC2 (through Karpenter's NodeClaim events) write them;
# the book shows what helpers.infra.k8s.decode_pending makes of each one.
PENDING_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "kube-scheduler: a CPU pod points at GPU nodes, or a GPU pod lacks the toleration",
        "0/3 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: }, 2 node(s) didn't match "
        "Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
        "scheduling.",
    ),
    (
        "kube-scheduler: no node has a free GPU yet (Karpenter should be launching one)",
        "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: "
        "4 No preemption victims found for incoming pod.",
    ),
    (
        "Karpenter: no node pool matches (taint on one, architecture on the other)",
        'Failed to schedule pod, incompatible with nodepool "x86", daemonset overhead={"cpu":"150m",'
        '"memory":"180Mi","pods":"3"}, did not tolerate taint (llm-eks-workshop/pool=x86:NoSchedule); '
        'incompatible with nodepool "graviton", daemonset overhead={"cpu":"150m","memory":"180Mi","pods":"3"}, '
        "incompatible requirements, key kubernetes.io/arch, kubernetes.io/arch In [amd64] not in "
        "kubernetes.io/arch In [arm64]",
    ),
    (
        "Karpenter: the pod asks for more than any allowed instance type has",
        'Failed to schedule pod, incompatible with nodepool "gpu", daemonset overhead={"cpu":"150m",'
        '"memory":"180Mi","pods":"3"}, no instance type satisfied resources {"cpu":"16150m","memory":"65716Mi",'
        '"nvidia.com/gpu":"8","pods":"4"} and requirements eks.amazonaws.com/instance-family In [g5 g6], '
        "eks.amazonaws.com/instance-gpu-count In [4] (no instance type has enough resources)",
    ),
    (
        "Karpenter: the node pool's limits (its spend cap) are reached",
        'all available instance types exceed limits for nodepool: "gpu"',
    ),
    (
        "EC2, in a NodeClaim event: the account's GPU vCPU quota is too small",
        "Launching NodeClaim: creating instance, with fleet error(s), VcpuLimitExceeded: You have requested more "
        "vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that the specified "
        "instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an "
        "adjustment to this limit.",
    ),
    (
        "EC2, in a NodeClaim event: no capacity of that type in the zone right now",
        "creating instance, insufficient capacity, with fleet error(s), InsufficientInstanceCapacity: We currently "
        "do not have sufficient g6.12xlarge capacity in the Availability Zone you requested (us-west-2d).",
    ),
    (
        "kube-scheduler: the pod's volume is in another zone",
        "0/3 nodes are available: 3 node(s) had volume node affinity conflict. preemption: 0/3 nodes are "
        "available: 3 Preemption is not helpful for scheduling.",
    ),
)


# ---------------------------------------------------------------- notebooks and the table of contents


def notebook_files() -> list[Path]:
    """Every notebook present, in teaching order (helpers/data/chapters.yaml), then any unlisted one by name."""
    from helpers import chapters

    listed = [c.notebook for c in chapters.all_chapters() if c.notebook.exists()]
    return listed + sorted(set(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")) - set(listed))


def notebook_title(path: Path) -> str:
    """The notebook's title: the text of the first `# ` heading in its first markdown cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            break
    raise ValueError(f"{path.name} has no `# NN · Title` heading in its first markdown cell")


def toc(stems: list[str]) -> dict[str, Any]:
    """The book's table of contents for the notebooks present."""
    return {
        "format": "jb-book",
        "root": "intro",
        "parts": [
            {"caption": "The platform", "chapters": [{"file": p} for p in PAGES_BEFORE]},
            {"caption": "Notebooks", "chapters": [{"file": f"notebooks/{s}"} for s in stems]},
            {"caption": "Reference", "chapters": [{"file": p} for p in PAGES_AFTER]},
        ],
    }


def chapter_substitutions(titles: dict[str, str]) -> dict[str, str]:
    """`nbNN` for every chapter: a link when the notebook exists, its plain name when it does not (yet)."""
    from helpers import chapters

    subs = {}
    for chapter in chapters.all_chapters():
        stem, builds, number = chapter.id, chapter.builds, chapter.number
        if stem in titles:
            subs[f"nb{number}"] = f"[{titles[stem]}](notebooks/{stem}.ipynb)"
        else:
            subs[f"nb{number}"] = f"notebook {number} ({builds}; not in this edition yet)"
    return subs


def chapters_table(titles: dict[str, str]) -> str:
    """Which notebook builds what, in both targets (links only to the notebooks that exist)."""
    from helpers import chapters

    rows = []
    for chapter in chapters.all_chapters():
        stem, builds, local = chapter.id, chapter.builds, chapter.local
        name = f"[{titles[stem]}](notebooks/{stem}.ipynb)" if stem in titles else f"{stem} (not in this edition yet)"
        rows.append({"notebook": name, "builds (eks)": builds, "runs locally": local})
    return md_table(rows)


# ---------------------------------------------------------------- markdown helpers


def md_text(value: Any) -> str:
    """Plain text made safe for MyST: `$` would open inline math (dollarmath), `|` would end a table cell."""
    return str(value).replace("$", "\\$").replace("|", "\\|").replace("\n", " ").strip()


def md_cell(value: Any) -> str:
    """A value as one markdown table cell (dollars and pipes escaped, no line breaks); code spans stay as they are."""
    text = str(value)
    if text.startswith("`") and text.endswith("`"):
        return text.replace("|", "\\|")
    return md_text(text)


def md_table(rows: list[dict[str, Any]], columns: list[str] | None = None, bold_last: bool = False) -> str:
    """Rows (dicts) as a GitHub-style markdown table."""
    if not rows:
        return "*(none)*\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(md_text(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for i, row in enumerate(rows):
        cells = [md_cell(row.get(c, "")) for c in columns]
        if bold_last and i == len(rows) - 1:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dollars(value: Decimal | float, places: int = 2) -> str:
    """\\$1,234.56: a dollar amount for a MyST substitution (the `$` escaped, or dollarmath reads it as math)."""
    return f"\\${value:,.{places}f}"


# ---------------------------------------------------------------- computed pages


def book_settings() -> Any:
    """The workshop's default settings for the eks target (the builder's .env never leaks into the book)."""
    from helpers.config import Settings

    return Settings(_env_file=None, target="eks")


def workshop_workloads(flavour: str, settings: Any) -> list[Any]:
    """What the finished platform runs, as notebook 01 counts it: every chapter's workloads plus the operators' pods."""
    from helpers.infra import k8s, manifests, scheduling

    operator_pods = [
        scheduling.Workload(name=pod, chapter="01-cluster-and-nodepools", replicas=1, cpu=cpu, memory=memory,
                            why=f"operator pod of the {release.name} chart")
        for release in k8s.operator_releases(flavour, settings.namespace, settings.cluster_name)
        for pod, cpu, memory in release.pods
    ]
    items = manifests.render(target="eks", flavour=flavour, settings=settings)
    return scheduling.platform_workloads(items) + operator_pods


def nodes_text(report: Any) -> str:
    """The nodes of a cost report, e.g. '1× c7g.2xlarge (graviton), 2× g6.12xlarge (gpu)'."""
    counts: dict[tuple[str, str], int] = {}
    for part in report.parts:
        if part.pool != "-" and "root volume" not in part.item:
            counts[(part.instance_type, part.pool)] = counts.get((part.instance_type, part.pool), 0) + part.count
    return ", ".join(f"{n}× {t} ({p})" for (t, p), n in counts.items()) or "none"


def cost_pages(titles: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The cost guide's tables and numbers, all computed from helpers.infra.scheduling and the rendered manifests."""
    from helpers import chapters
    from helpers.infra import aws, manifests, scheduling

    settings = book_settings()
    flavour = manifests.default_flavour(settings)
    pools = scheduling.node_pools(flavour, settings=settings)
    table = aws.load_instance_types()
    workloads = workshop_workloads(flavour, settings)
    report = scheduling.platform_cost(workloads, pools, table)
    if report.unplaced:
        raise RuntimeError(f"cost: no node pool can host {', '.join(report.unplaced)}; fix the manifests first")
    at_max = scheduling.platform_cost(workloads, pools, table, at="max")
    without_gpu = scheduling.platform_cost([w for w in workloads if not w.gpus], pools, table)
    gpu_hourly = sum((p.hourly for p in report.parts if p.pool == "gpu"), Decimal(0))
    caps = scheduling.spend_caps(pools, table)
    caps_total = sum((c.max_hourly for c in caps), Decimal(0)) + scheduling.EKS_CLUSTER_PER_HOUR

    files: dict[str, str] = {}
    rows = report.rows()
    files["cost-parts.md"] = md_table(rows, [c for c in rows[0] if c not in ("pool", "hosts")], bold_last=True)
    files["cost-hosts.md"] = "".join(
        f"- **{md_text(r['item'])}** ({r['instance type']}): {md_text(r['hosts'])}\n"
        for r in rows if r["hosts"] and r["item"] != "TOTAL"
    )

    # what each notebook adds, in teaching order: cumulative cost of chapters <= N, minus chapters < N
    stems = {c.number: c.id for c in chapters.all_chapters()}
    numbers = sorted({w.chapter[:2] for w in workloads})
    rows, previous = [], Decimal(0)
    for number in numbers:
        cumulative = scheduling.platform_cost([w for w in workloads if w.chapter[:2] <= number], pools, table)
        added = [w for w in workloads if w.chapter[:2] == number]
        stem = stems.get(number, number)
        rows.append({
            "notebook": f"[{titles[stem]}](notebooks/{stem}.ipynb)" if stem in titles else stem,
            "adds (pods)": ", ".join(f"{w.name} ×{w.replicas}" if w.replicas > 1 else w.name for w in added),
            "nodes running afterwards": nodes_text(cumulative),
            "adds $/h": f"{scheduling.money(cumulative.total - previous)}",
            "running total $/h": f"{scheduling.money(cumulative.total)}",
        })
        previous = cumulative.total
    if previous != report.total:
        raise RuntimeError(f"cost: the per-notebook steps add up to {previous}, not the platform's {report.total}")
    files["cost-by-notebook.md"] = md_table(rows)

    files["cost-excluded.md"] = "".join(f"- {item}\n" for item in report.excludes)
    files["cost-volumes.md"] = volumes_table(settings, flavour)

    files["spend-caps.md"] = md_table(
        [{"pool": c.pool, "limits": ", ".join(f"{k}={v}" for k, v in c.limits.items()),
          "priciest allowed type": c.worst_instance_type, "nodes at the limit": c.max_nodes,
          "worst case $/h": f"{scheduling.money(c.max_hourly)}"} for c in caps]
        + [{"pool": "all pools + EKS control plane", "worst case $/h": f"{scheduling.money(caps_total)}"}],
        bold_last=True,
    )
    files["scale-down.md"] = scale_down_table(settings, flavour)

    gpu_quota = aws.QUOTAS["gpu"]
    gpu_part = next(p for p in report.parts if p.pool == "gpu" and "root volume" not in p.item)
    gpu_vcpus = report.vcpus_by_quota()["gpu"]
    files["quota-commands.md"] = quota_commands(gpu_quota.service_code, gpu_quota.quota_code, gpu_vcpus,
                                                settings.aws_region)
    subs = {
        "flavour": "EKS Auto Mode" if flavour == "auto-mode" else "self-managed Karpenter",
        "region": settings.aws_region,
        "price_source": f"`{gpu_part.source.removeprefix('on-demand, ')}`",
        "cost_total": dollars(report.total),
        "cost_monthly": dollars(report.monthly, 0),
        "cost_max": dollars(at_max.total),
        "cost_gpu": dollars(gpu_hourly),
        "gpu_share": f"{gpu_hourly / report.total:.0%}",
        "gpu_nodes": nodes_text(scheduling.CostReport(tuple(p for p in report.parts if p.pool == "gpu"), ())),
        "cost_without_gpu": dollars(without_gpu.total),
        "cost_control_plane": dollars(scheduling.EKS_CLUSTER_PER_HOUR),
        "cost_control_plane_month": dollars(scheduling.EKS_CLUSTER_PER_HOUR * scheduling.HOURS_PER_MONTH, 0),
        "caps_total": dollars(caps_total),
        "gpu_quota_code": f"`{gpu_quota.quota_code}`",
        "gpu_quota_name": gpu_quota.name,
        "gpu_quota_url": f"[Service Quotas console]({quota_console_url(gpu_quota.quota_code, settings.aws_region)})",
        "gpu_vcpus_needed": str(gpu_vcpus),
        "gpu_instance": gpu_part.instance_type,
        "gpu_instance_vcpus": str(table[gpu_part.instance_type].vcpu),
    }
    return files, subs


def quota_console_url(quota_code: str, region: str) -> str:
    """The Service Quotas console page of a quota (the doctor prints the same link)."""
    from helpers.local import doctor

    quota = next(q for q in doctor.QUOTAS if q.quota_code == quota_code)
    return quota.console_url(region)


def quota_commands(service_code: str, quota_code: str, vcpus: int, region: str) -> str:
    """The AWS CLI commands that read, raise and follow a quota, for the vCPUs the plan needs."""
    args = f"--service-code {service_code} --quota-code {quota_code} --region {region}"
    return (
        "```bash\n"
        f"aws service-quotas get-service-quota {args}\n"
        f"aws service-quotas request-service-quota-increase {args} --desired-value {vcpus}\n"
        f"aws service-quotas list-requested-service-quota-change-history-by-quota {args}\n"
        "```\n"
    )


def volumes_table(settings: Any, flavour: str) -> str:
    """The PersistentVolumeClaims the rendered manifests create, and what their gp3 storage costs per hour."""
    from helpers.infra import manifests, scheduling

    rows, total = [], Decimal(0)
    for m in manifests.render(target="eks", flavour=flavour, settings=settings):
        if m.kind != "PersistentVolumeClaim":
            continue
        size = (((m.doc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage", "0")
        gib = Decimal(str(scheduling.quantity_gib(size)))
        hourly = scheduling.GP3_PER_GB_MONTH * gib / scheduling.HOURS_PER_MONTH
        total += hourly
        rows.append({"claim": m.name, "chapter": m.chapter, "size": size, "$/h": f"{scheduling.money(hourly)}"})
    if not rows:
        return "*(no chapter creates a PersistentVolumeClaim yet)*\n"
    rows.append({"claim": "TOTAL", "$/h": f"{scheduling.money(total)}"})
    return md_table(rows, bold_last=True)


def scale_down_table(settings: Any, flavour: str) -> str:
    """How each node pool scales down, read from the rendered NodePools."""
    from helpers.infra import manifests

    rows = []
    for m in manifests.render_chapter("01-cluster-and-nodepools", target="eks", flavour=flavour, settings=settings):
        if m.kind != "NodePool":
            continue
        spec = m.doc["spec"]
        node = spec["template"]["spec"]
        capacity = next((", ".join(r.get("values") or []) for r in node.get("requirements", [])
                         if r["key"] == "karpenter.sh/capacity-type"), "on-demand, spot")
        disruption = spec.get("disruption") or {}
        rows.append({
            "pool": m.name,
            "capacity type": capacity,
            "consolidation": disruption.get("consolidationPolicy", "-"),
            "after": disruption.get("consolidateAfter", "-"),
            "nodes replaced after (expireAfter)": node.get("expireAfter", "-"),
            "taint": ", ".join(t["key"] for t in node.get("taints") or []) or "none",
        })
    return md_table(rows)


def _seconds(probe: dict[str, Any], startup: bool = False) -> int:
    """How long a probe may fail before Kubernetes acts (Kubernetes defaults where a field is unset)."""
    period = int(probe.get("periodSeconds", 10))
    threshold = int(probe.get("failureThreshold", 3))
    return int(probe.get("initialDelaySeconds", 0)) + period * threshold if startup else period * threshold


def _duration(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds >= 120 and seconds % 60 == 0 else f"{seconds} s"


def probes_table(settings: Any, flavour: str) -> str:
    """Every serving container of the rendered manifests and how long each of its probes may fail."""
    from helpers.infra import manifests

    rows = []
    for m in manifests.render(target="eks", flavour=flavour, settings=settings):
        for _where, spec in manifests.pod_specs(m.doc):
            for c in spec.get("containers") or []:
                probes = {k: c.get(f"{k}Probe") for k in ("startup", "readiness", "liveness")}
                if not any(probes.values()):
                    continue
                rows.append({
                    "object": f"{m.kind}/{m.name} ({m.chapter})",
                    "container": c.get("name", "?"),
                    "startup: restarted if not up after": _duration(_seconds(probes["startup"], True))
                    if probes["startup"] else "no startup probe",
                    "readiness: out of the Service after": _duration(_seconds(probes["readiness"]))
                    if probes["readiness"] else "-",
                    "liveness: restarted after": _duration(_seconds(probes["liveness"]))
                    if probes["liveness"] else "no liveness probe",
                })
    return md_table(rows)


def local_services_table() -> str:
    """The local stack's services at their default ports (helpers.local.stack.SERVICES)."""
    from helpers.local import stack
    from helpers.config import Settings

    defaults = Settings.model_fields
    host = defaults["host"].default
    rows = []
    for svc in stack.SERVICES.values():
        port = defaults[svc.port_setting].default
        health = f"GET {svc.health_path}" if not svc.health_check else svc.health_check.split(":")[1] + "()"
        rows.append({
            "service": f"`{svc.name}`",
            "default address, and the setting that moves it": f"`{svc.scheme}://{host}:{port}{svc.url_path}` "
                                                              f"`WORKSHOP_{svc.port_setting.upper()}`",
            "what": svc.description,
            "health check": health,
        })
    return md_table(rows)


def decoder_examples() -> str:
    """Each example event message and what helpers.infra.k8s.decode_pending makes of it."""
    from helpers.infra import k8s

    parts = []
    for title, message in PENDING_EXAMPLES:
        decoded = k8s.decode_pending(message)
        if not decoded:
            raise RuntimeError(f"decode_pending no longer recognises the example {title!r}")
        parts.append(f"**{title}**\n\n```text\n{message}\n```\n\n")
        parts.append(md_table([{"cause": f"`{d.cause}`", "what it means": d.explanation, "fix": d.fix}
                               for d in decoded]))
        parts.append("\n")
    return "".join(parts)


# ---------------------------------------------------------------- staging and building


def _failed_under_papermill(nb: Any) -> bool:
    """Whether papermill stopped on an exception in this executed notebook (it adds a red banner cell)."""
    if (nb.metadata.get("papermill") or {}).get("exception"):
        return True
    return any("papermill-error-cell-tag" in (c.metadata.get("tags") or []) for c in nb.cells)


def _copy_notebook(nb: Path, dest: Path) -> None:
    """Stage the executed copy (sanitized) when it is a successful run, else the committed notebook."""
    executed = EXECUTED / nb.name
    if executed.exists():
        run = nbformat.read(executed, as_version=4)
        if _failed_under_papermill(run):
            print(f"book: {executed.relative_to(ROOT)} is a failed run; the book shows the committed {nb.name}",
                  file=sys.stderr)
        else:
            sys.path.insert(0, str(ROOT / "tools"))
            from sanitize_notebooks import sanitize

            nbformat.write(sanitize(run), dest)
            return
    shutil.copy2(nb, dest)


def stage() -> Path:
    """Copy the pages and the notebooks (executed copies when present), then generate the computed parts."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    shutil.copytree(ROOT / "book", STAGE, ignore=shutil.ignore_patterns("_build", "_toc.yml"))
    (STAGE / "notebooks").mkdir()
    from helpers import chapters

    known = set(chapters.ids())
    titles: dict[str, str] = {}
    for nb in notebook_files():
        if nb.stem not in known:
            print(f"book: {nb.name} is not listed in helpers/data/chapters.yaml; added in file-name order", file=sys.stderr)
        _copy_notebook(nb, STAGE / "notebooks" / nb.name)
        titles[nb.stem] = notebook_title(STAGE / "notebooks" / nb.name)  # the copy the book shows

    header = "# Generated by tools/build_book.py from the notebooks/NN-*.ipynb present; do not edit.\n"
    (STAGE / "_toc.yml").write_text(header + yaml.safe_dump(toc(list(titles)), sort_keys=False))

    settings = book_settings()
    from helpers.infra import manifests

    flavour = manifests.default_flavour(settings)
    generated = STAGE / GENERATED
    generated.mkdir()
    files, subs = cost_pages(titles)
    files["chapters.md"] = chapters_table(titles)
    files["local-services.md"] = local_services_table()
    files["probes.md"] = probes_table(settings, flavour)
    files["pending-examples.md"] = decoder_examples()
    for name, text in files.items():
        (generated / name).write_text(text)

    config_path = STAGE / "_config.yml"
    config = yaml.safe_load(config_path.read_text())
    parse = config.setdefault("parse", {})
    parse["myst_substitutions"] = {**(parse.get("myst_substitutions") or {}), **chapter_substitutions(titles), **subs}
    config_path.write_text("# Generated by tools/build_book.py from book/_config.yml plus computed substitutions.\n"
                           + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (generated / "substitutions.json").write_text(json.dumps(parse["myst_substitutions"], indent=1) + "\n")
    return STAGE


WARNING = re.compile(r"WARNING|ERROR|CRITICAL")


def main(argv: list[str] | None = None) -> int:
    """Stage and build; print every Sphinx warning and where the site is."""
    parser = argparse.ArgumentParser(prog="python tools/build_book.py", description=__doc__.splitlines()[0])
    parser.add_argument("--stage-only", action="store_true", help="write build/book-src and stop")
    args = parser.parse_args(argv)
    try:
        src = stage()
    except Exception as error:  # a chapter's manifests or a notebook that cannot be read: say which, stop
        print(f"book: staging failed, {type(error).__name__}: {error}\n"
              "Fix the file named above (`python -m helpers.infra.manifests check` checks every chapter's manifests), "
              "then re-run `make book`.", file=sys.stderr)
        return 1
    if args.stage_only:
        print(f"book: staged {src.relative_to(ROOT)}")
        return 0
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(src), "--path-output", str(OUT), "--quiet"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        print("book: build failed (see above)", file=sys.stderr)
        return 1
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if WARNING.search(line)]
    for line in warnings:
        print("book: " + re.sub(r"\x1b\[[0-9;]*m", "", line).replace(str(STAGE) + "/", ""))
    index = HTML / "index.html"
    print(f"book: built {index.relative_to(ROOT)} ({len(warnings)} warning(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
