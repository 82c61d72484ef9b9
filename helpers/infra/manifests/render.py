"""Render a chapter's Jinja2 templates (`manifests/<chapter>/*.yaml.j2` + `parameters.yaml`) for a target and flavour.

The context is the workshop settings (cluster name, region, namespace), then the chapter's defaults, then the
caller's overrides. Objects come back in apply order."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
import yaml

from helpers.config import Settings
from helpers.errors import WorkshopError
from helpers.infra.manifests.objects import (
    AWS_TAG,
    COMMON_LABELS,
    DEFAULT_FLAVOUR,
    FLAVOURS,
    KUBERNETES_VERSION,
    MANIFESTS_DIR,
    ON_DEMAND_DIR,
    PART_OF,
    TARGETS,
    Manifest,
)


# Apply order by kind (lower first). Deletion has its own order: helpers.infra.teardown.DELETE_ORDER.
KIND_ORDER = [
    "Namespace",
    "StorageClass",
    "IngressClassParams",
    "IngressClass",
    "NodeClass",
    "EC2NodeClass",
    "NodePool",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "NetworkPolicy",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "RayService",
    "RayCluster",
    "Job",
    "CronJob",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "Ingress",
    "ServiceMonitor",
    "PodMonitor",
    "Pod",
]


def chapters() -> list[str]:
    """The chapters whose folder under manifests/ holds templates, in teaching order (helpers.chapters)."""
    from helpers import chapters as workshop_chapters

    return workshop_chapters.with_manifests()


@functools.lru_cache(maxsize=512)
def _parsed(text: str, many: bool) -> Any:
    return tuple(yaml.safe_load_all(text)) if many else yaml.safe_load(text)


def parse_yaml(text: str, many: bool = False) -> Any:
    """yaml.safe_load (a list of safe_load_all's documents when `many`) of a text, parsed once per distinct text."""
    parsed = _parsed(text, many)  # a pure function of the text, so the cache is always right
    return copy.deepcopy(list(parsed) if many else parsed)  # callers may change what they get


def chapter_parameters(chapter: str) -> dict[str, Any]:
    """The defaults of a chapter (its parameters.yaml), or {} when it has none."""
    path = MANIFESTS_DIR / chapter / "parameters.yaml"
    return (parse_yaml(path.read_text()) or {}) if path.exists() else {}


def templates(chapter: str, include_on_demand: bool = False) -> list[str]:
    """Template paths of a chapter, relative to its folder; on-demand ones only when asked."""
    folder = MANIFESTS_DIR / chapter
    found = sorted(str(p.relative_to(folder)) for p in folder.glob("*.yaml.j2"))
    if include_on_demand:
        found += sorted(str(p.relative_to(folder)) for p in (folder / ON_DEMAND_DIR).glob("*.yaml.j2"))
    return found


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of base with extra merged in (nested dicts merge, anything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def default_flavour(settings: Settings | None = None) -> str:
    """The node-provisioning flavour: settings.compute_mode when set, else EKS Auto Mode."""
    settings = settings or Settings()
    value = getattr(settings, "compute_mode", None) or DEFAULT_FLAVOUR
    return value if value in FLAVOURS else DEFAULT_FLAVOUR


def render_context(
    chapter: str,
    target: str,
    flavour: str | None = None,
    overrides: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Everything a chapter's templates see: settings, then the chapter's defaults, then overrides."""
    settings = settings or Settings()
    flavour = flavour or default_flavour(settings)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    context: dict[str, Any] = {
        "target": target,
        "flavour": flavour,
        "cluster_name": settings.cluster_name,
        "aws_region": settings.aws_region,
        "namespace": settings.namespace,
        "kubernetes_version": KUBERNETES_VERSION,
        "part_of": PART_OF,
        "common_labels": dict(COMMON_LABELS),
        "aws_tags": dict(AWS_TAG),
    }
    context = deep_merge(context, chapter_parameters(chapter))
    return deep_merge(context, overrides or {})


def instance_label(key: str, flavour: str) -> str:
    """The node label for a requirement key: `instance-*` keys get the flavour's prefix, others stay."""
    if key.startswith("instance-"):
        prefix = "eks.amazonaws.com/" if flavour == "auto-mode" else "karpenter.k8s.aws/"
        return prefix + key
    return key


def _environment(chapter: str) -> jinja2.Environment:
    return _environment_for(str(MANIFESTS_DIR / chapter))


@functools.lru_cache(maxsize=64)
def _environment_for(folder: str) -> jinja2.Environment:
    """One Jinja2 environment per template folder: each template compiles once (and again when its file changes)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = lambda value: json.dumps(str(value))
    env.globals["fail"] = fail
    return env


def fail(message: str, fix: str) -> None:
    """Stop rendering with a WorkshopError: templates call {{ fail(message, fix) }} when a required value is missing."""
    raise WorkshopError(message, fix)


def render_text(
    chapter: str,
    template: str,
    target: str,
    flavour: str | None = None,
    overrides: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> str:
    """One template rendered to YAML text, comments kept: what a notebook shows as the explanation."""
    context = render_context(chapter, target, flavour, overrides, settings)
    context["instance_key"] = lambda key: instance_label(key, context["flavour"])
    return _environment(chapter).get_template(template).render(**context)


def render_object_text(
    chapter: str,
    template: str,
    name: str,
    target: str,
    flavour: str | None = None,
    overrides: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> str:
    """The commented YAML of one object (by metadata.name) from a template that renders several."""
    text = render_text(chapter, template, target, flavour, overrides, settings)
    for part in re.split(r"^---[ \t]*\n", text, flags=re.M):
        doc = yaml.safe_load(part) if part.strip() else None
        if isinstance(doc, dict) and (doc.get("metadata") or {}).get("name") == name:
            return part.strip("\n") + "\n"
    raise KeyError(f"{template} of chapter {chapter} renders no object named {name!r}")


def render_chapter(
    chapter: str,
    target: str,
    flavour: str | None = None,
    overrides: dict[str, Any] | None = None,
    include_on_demand: bool = False,
    settings: Settings | None = None,
) -> list[Manifest]:
    """All objects of one chapter, in apply order."""
    manifests: list[Manifest] = []
    for template in templates(chapter, include_on_demand):
        text = render_text(chapter, template, target, flavour, overrides, settings)
        for doc in parse_yaml(text, many=True):
            if doc:
                manifests.append(Manifest(chapter=chapter, template=template, doc=doc))
    return sort_for_apply(manifests)


def placeholders(settings: Settings | None = None) -> dict[str, Any]:
    """Values that exist only once AWS resources do, as recognisable placeholders for whole-workshop renders.

    Chapter 08's agent needs the OpenSearch domain endpoint of chapter 06 and refuses to render for eks without
    one. A render of every chapter is for checks, costs and the teardown plan, never applied as is (each chapter
    is applied from its own render), so it is given this placeholder explicitly instead."""
    region = (settings or Settings()).aws_region or "us-west-2"
    return {"opensearch_endpoint": f"vpc-llm-workshop-placeholder.{region}.es.amazonaws.com"}


def render(
    target: str,
    flavour: str | None = None,
    chapter_names: Iterable[str] | None = None,
    overrides: dict[str, Any] | None = None,
    include_on_demand: bool = False,
    settings: Settings | None = None,
) -> list[Manifest]:
    """Every object of the workshop (or of the chapters named), chapter by chapter, each in apply order.

    Values known only after AWS resources exist come from placeholders() unless overrides give them: this
    render is for checks, costs and teardown plans; apply a chapter from render_chapter with the real values."""
    overrides = deep_merge(placeholders(settings), overrides or {})
    result: list[Manifest] = []
    for chapter in chapter_names or chapters():
        result += render_chapter(chapter, target, flavour, overrides, include_on_demand, settings)
    return result


def kind_rank(kind: str) -> int:
    """Position of a kind in the apply order (unknown kinds go last)."""
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def sort_for_apply(manifests: list[Manifest]) -> list[Manifest]:
    """Manifests ordered so that what others depend on (namespaces, classes) is applied first."""
    return sorted(manifests, key=lambda m: kind_rank(m.kind))


def write(manifests: Iterable[Manifest], out_dir: Path | str, subfolder: str = "") -> list[Path]:
    """Write each object to its own plain-YAML file under out_dir/<subfolder>/<chapter>/; return the paths."""
    out = Path(out_dir) / subfolder if subfolder else Path(out_dir)
    written: list[Path] = []
    counters: dict[str, int] = {}
    for manifest in manifests:
        counters[manifest.chapter] = counters.get(manifest.chapter, 0) + 1
        folder = out / manifest.chapter
        if manifest.template.startswith(ON_DEMAND_DIR + "/"):
            folder = folder / ON_DEMAND_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{counters[manifest.chapter]:02d}-{manifest.kind.lower()}-{manifest.name}.yaml"
        path.write_text("---\n" + manifest.to_yaml())
        written.append(path)
    return written
