"""The book's computed parts (tools/build_book.py includes them): tables and numbers that are never typed by hand.

Chapter links and the chapter table, the hourly cost part by part and per notebook, spend caps, quotas, volumes,
how each pool scales down, the probes of every server, the local services, and the Pending-pod decoder on real
event texts: each computed from the library (helpers.infra.scheduling, helpers.local.services, ...) for an
eks Target, as markdown.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


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


def book_target() -> Any:
    """The eks target with the workshop's default settings (the builder's .env never leaks into the book)."""
    from helpers.config import Settings
    from helpers.target import Target

    return Target("eks", Settings(_env_file=None))


def workshop_workloads(t: Any) -> list[Any]:
    """Everything the platform can run, as notebook 01 counts it: every chapter's workloads (the on-demand and
    optional ones too) plus the operators' pods. `scheduling.default_workloads` keeps what is deployed by default."""
    from helpers.infra import k8s, scheduling

    operator_pods = [
        scheduling.Workload(name=pod, chapter="01-cluster-and-nodepools", replicas=1, cpu=cpu, memory=memory,
                            why=f"operator pod of the {release.name} chart")
        for release in k8s.operator_releases(t.flavour, t.settings.namespace, t.settings.cluster_name)
        for pod, cpu, memory in release.pods
    ]
    return scheduling.platform_workloads(t.render_all(include_on_demand=True)) + operator_pods


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
    from helpers.infra import aws, scheduling

    t = book_target()
    settings, flavour = t.settings, t.flavour
    pools = scheduling.node_pools(t)
    table = aws.load_instance_types()
    every_workload = workshop_workloads(t)
    workloads = scheduling.default_workloads(every_workload)  # the default platform; optional parts priced apart
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

    optional = scheduling.optional_costs(every_workload, pools, table)
    files["cost-optional.md"] = md_table(optional)

    files["cost-excluded.md"] = "".join(f"- {item}\n" for item in report.excludes)
    files["cost-volumes.md"] = volumes_table(t)

    files["spend-caps.md"] = md_table(
        [{"pool": c.pool, "limits": ", ".join(f"{k}={v}" for k, v in c.limits.items()),
          "priciest allowed type": c.worst_instance_type, "nodes at the limit": c.max_nodes,
          "worst case $/h": f"{scheduling.money(c.max_hourly)}"} for c in caps]
        + [{"pool": "all pools + EKS control plane", "worst case $/h": f"{scheduling.money(caps_total)}"}],
        bold_last=True,
    )
    files["scale-down.md"] = scale_down_table(t)

    gpu_quota = aws.QUOTAS["gpu"]
    gpu_part = next(p for p in report.parts if p.pool == "gpu" and "root volume" not in p.item)
    gpu_vcpus = report.vcpus_by_quota()["gpu"]
    everything = scheduling.platform_cost(scheduling.with_additive_parts(every_workload), pools, table)
    files["quota-commands.md"] = quota_commands(gpu_quota.service_code, gpu_quota.quota_code, gpu_vcpus,
                                                settings.aws_region)
    subs = {
        "flavour": "EKS Auto Mode" if flavour == "auto-mode" else "self-managed Karpenter",
        "region": settings.aws_region,
        "price_source": f"`{gpu_part.source.removeprefix('on-demand, ')}`",
        "cost_total": dollars(report.total),
        "optional_parts": ", ".join(row["optional part"] for row in optional),
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
        "gpu_vcpus_all_parts": str(everything.vcpus_by_quota()["gpu"]),
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


def volumes_table(t: Any) -> str:
    """The PersistentVolumeClaims the target's rendered manifests create, and what their gp3 storage costs per hour."""
    from helpers.infra import scheduling

    manifests = t.render_all(include_on_demand=True)
    switches = optional_claims(manifests)
    rows, total = [], Decimal(0)
    for m in manifests:
        if m.kind != "PersistentVolumeClaim":
            continue
        size = (((m.doc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage", "0")
        gib = Decimal(str(scheduling.quantity_gib(size)))
        hourly = scheduling.GP3_PER_GB_MONTH * gib / scheduling.HOURS_PER_MONTH
        if m.name not in switches:
            total += hourly
        rows.append({"claim": m.name, "chapter": m.chapter, "size": size, "$/h": f"{scheduling.money(hourly)}",
                     "created": f"only with {switches[m.name]}" if m.name in switches else "by default"})
    if not rows:
        return "*(no chapter creates a PersistentVolumeClaim yet)*\n"
    rows.append({"claim": "TOTAL (by default)", "$/h": f"{scheduling.money(total)}"})
    return md_table(rows, bold_last=True)


def optional_claims(manifests: list[Any]) -> dict[str, str]:
    """The claims that only an optional part's pods mount, each with the switch that deploys that part."""
    from helpers.infra import scheduling

    mounted: dict[str, set[str]] = {}
    for m in manifests:
        template = ((m.doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        for volume in template.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                mounted.setdefault(claim, set()).add(m.name)
    switches = {}
    for claim, owners in mounted.items():
        parts = {part for part in scheduling.OPTIONAL_PARTS if owners <= set(part.objects)}
        if len(parts) == 1:
            switches[claim] = parts.pop().switch
    return switches


def scale_down_table(t: Any) -> str:
    """How each node pool scales down, read from the target's rendered NodePools."""
    from helpers.infra.scheduling import NODEPOOL_CHAPTER

    rows = []
    for m in t.render(NODEPOOL_CHAPTER):
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


def probes_table(t: Any) -> str:
    """Every serving container of the target's rendered manifests and how long each of its probes may fail."""
    from helpers.infra import manifests

    rows = []
    for m in t.render_all():
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
        health = f"GET {svc.health_path}" if not svc.health_check else f"{svc.health_check.__name__}()"
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
