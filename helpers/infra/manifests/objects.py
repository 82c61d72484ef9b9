"""The rendered objects and what every check reports: Manifest, Finding, the workshop's labels and tags, pod templates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from helpers.config import ROOT


# The newest Kubernetes minor version that both Amazon EKS offers (1.36 since June 2026) and
# kubernetes-validate 1.37.0 ships schemas for. Cluster creation and validation both use it.
KUBERNETES_VERSION = "1.36"


MANIFESTS_DIR = ROOT / "manifests"


SCHEMAS_DIR = MANIFESTS_DIR / "schemas"


ON_DEMAND_DIR = "on-demand"  # chapter sub-folder for manifests applied only when a notebook asks


PART_OF_LABEL = "app.kubernetes.io/part-of"


PART_OF = "llm-eks-workshop"


COMMON_LABELS = {PART_OF_LABEL: PART_OF}


AWS_TAG = {"workshop": "llm-eks-workshop"}


FLAVOURS = ("auto-mode", "karpenter")


DEFAULT_FLAVOUR = "auto-mode"


TARGETS = ("local", "eks")


# Path of the pod template inside a workload object, by kind (a Pod is its own template).
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and where it came from."""

    chapter: str
    template: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        """The object's kind, e.g. NodePool."""
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        """The object's metadata.name."""
        return str((self.doc.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str | None:
        """The object's namespace, or None for cluster-scoped objects."""
        return (self.doc.get("metadata") or {}).get("namespace")

    @property
    def ref(self) -> str:
        """A short, unique reference: Kind/name or Kind/namespace/name."""
        return object_ref(self.doc)

    def to_yaml(self) -> str:
        """The object as plain YAML (one document, no comments)."""
        return yaml.safe_dump(self.doc, sort_keys=False, width=120)


@dataclass(frozen=True)
class Finding:
    """One problem found by validate() or policy(): which object, which rule, what is wrong, how to fix it."""

    object: str
    rule: str
    message: str
    fix: str

    def as_row(self) -> dict[str, str]:
        """The finding as a dict, one row of a table."""
        return asdict(self)


def object_ref(doc: dict[str, Any]) -> str:
    """Kind/name (cluster-scoped) or Kind/namespace/name of a Kubernetes object."""
    meta = doc.get("metadata") or {}
    parts = [str(doc.get("kind", "?")), meta.get("namespace"), str(meta.get("name", "?"))]
    return "/".join(p for p in parts if p)


def find(items: Iterable[Manifest], kind: str, name: str) -> Manifest:
    """The rendered object of this kind and name (a KeyError naming it when there is none)."""
    for item in items:
        if item.kind == kind and item.name == name:
            return item
    raise KeyError(f"no {kind}/{name} among the rendered objects")


def load_documents(paths: Iterable[Path | str]) -> list[dict[str, Any]]:
    """Kubernetes objects read from YAML files or folders of them (recursively)."""
    docs: list[dict[str, Any]] = []
    for path in map(Path, paths):
        files = sorted(path.rglob("*.yaml")) + sorted(path.rglob("*.yml")) if path.is_dir() else [path]
        for file in files:
            docs += [d for d in yaml.safe_load_all(file.read_text()) if d]
    return docs


def as_docs(items: Iterable[Manifest | dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain dicts of rendered objects or dicts (checks accept either)."""
    return [item.doc if isinstance(item, Manifest) else item for item in items]


def pod_templates(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod template (metadata + spec) inside an object, and where it sits ('pod', 'template', 'head', ...)."""
    kind = str(doc.get("kind"))
    if kind in POD_TEMPLATE_PATHS:
        node: Any = doc
        for part in POD_TEMPLATE_PATHS[kind]:
            node = node.get(part) if isinstance(node, dict) else None
        return [("pod" if kind == "Pod" else "template", node)] if isinstance(node, dict) else []
    if kind in ("RayService", "RayCluster"):
        spec = doc.get("spec") or {}
        cluster = (spec.get("rayClusterConfig") if kind == "RayService" else spec) or {}
        found = []
        head = (cluster.get("headGroupSpec") or {}).get("template")
        if isinstance(head, dict):
            found.append(("head", head))
        for group in cluster.get("workerGroupSpecs") or []:
            if isinstance(group.get("template"), dict):
                found.append((f"worker {group.get('groupName', '?')}", group["template"]))
        return found
    return []


def pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec inside an object, with where it sits (see pod_templates)."""
    return [(where, template.get("spec") or {}) for where, template in pod_templates(doc)]
