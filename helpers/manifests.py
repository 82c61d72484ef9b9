"""Render the workshop's Kubernetes manifests for either target, then validate them and check policy offline.

Every chapter folder under `manifests/` (`01-nodepools/`, `02-vllm/`, ...) holds Jinja2 templates
(`*.yaml.j2`) and a `parameters.yaml` of defaults. One renderer turns them into plain Kubernetes objects
with the workshop settings (cluster name, region, namespace, target) + the chapter's defaults + your
overrides. `validate()` checks core kinds against the Kubernetes OpenAPI schemas of KUBERNETES_VERSION
(kubernetes-validate, strict) and custom resources against the project's own strict JSON schemas in
`manifests/schemas/`. `policy()` checks the workshop's rules. Both return findings as data.

    python -m helpers.manifests render --target eks --out build/manifests
    python -m helpers.manifests check
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from helpers.config import ROOT, Settings

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

# Taints the accelerator node pools carry, by the extended resource a pod asks for.
ACCELERATOR_TAINTS: dict[str, dict[str, str]] = {
    "nvidia.com/gpu": {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
    "aws.amazon.com/neuron": {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"},
    "aws.amazon.com/neuroncore": {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"},
}

# Apply order by kind (lower first). Deletion has its own order: helpers.teardown.DELETE_ORDER.
KIND_ORDER = [
    "Namespace",
    "StorageClass",
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
SECRET_NAME_PARTS = {"KEY", "APIKEY", "TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "CREDENTIALS"}


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


# ---------------------------------------------------------------- rendering


def object_ref(doc: dict[str, Any]) -> str:
    """Kind/name (cluster-scoped) or Kind/namespace/name of a Kubernetes object."""
    meta = doc.get("metadata") or {}
    parts = [str(doc.get("kind", "?")), meta.get("namespace"), str(meta.get("name", "?"))]
    return "/".join(p for p in parts if p)


def chapters() -> list[str]:
    """The chapter folders under manifests/ that hold templates, in order."""
    return sorted(
        p.name
        for p in MANIFESTS_DIR.iterdir()
        if p.is_dir() and re.match(r"^\d\d-", p.name) and any(p.rglob("*.yaml.j2"))
    )


def chapter_parameters(chapter: str) -> dict[str, Any]:
    """The defaults of a chapter (its parameters.yaml), or {} when it has none."""
    path = MANIFESTS_DIR / chapter / "parameters.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


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
    target: str | None = None,
    flavour: str | None = None,
    overrides: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Everything a chapter's templates see: settings, then the chapter's defaults, then overrides."""
    settings = settings or Settings()
    target = target or settings.target
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
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(MANIFESTS_DIR / chapter)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = lambda value: json.dumps(str(value))
    return env


def render_text(
    chapter: str,
    template: str,
    target: str | None = None,
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
    target: str | None = None,
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
    target: str | None = None,
    flavour: str | None = None,
    overrides: dict[str, Any] | None = None,
    include_on_demand: bool = False,
    settings: Settings | None = None,
) -> list[Manifest]:
    """All objects of one chapter, in apply order."""
    manifests: list[Manifest] = []
    for template in templates(chapter, include_on_demand):
        text = render_text(chapter, template, target, flavour, overrides, settings)
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append(Manifest(chapter=chapter, template=template, doc=doc))
    return sort_for_apply(manifests)


def render(
    target: str | None = None,
    flavour: str | None = None,
    chapter_names: Iterable[str] | None = None,
    overrides: dict[str, Any] | None = None,
    include_on_demand: bool = False,
    settings: Settings | None = None,
) -> list[Manifest]:
    """Every object of the workshop (or of the chapters named), chapter by chapter, each in apply order."""
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


def load_documents(paths: Iterable[Path | str]) -> list[dict[str, Any]]:
    """Kubernetes objects read from YAML files or folders of them (recursively)."""
    docs: list[dict[str, Any]] = []
    for path in map(Path, paths):
        files = sorted(path.rglob("*.yaml")) + sorted(path.rglob("*.yml")) if path.is_dir() else [path]
        for file in files:
            docs += [d for d in yaml.safe_load_all(file.read_text()) if d]
    return docs


def _docs(items: Iterable[Manifest | dict[str, Any]]) -> list[dict[str, Any]]:
    return [item.doc if isinstance(item, Manifest) else item for item in items]


# ---------------------------------------------------------------- validation


def _k8s_definitions_resource() -> Resource:
    folder = kubernetes_validate.__path__[0]
    path = Path(folder) / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json"
    return Resource.from_contents(json.loads(path.read_text()))


@lru_cache(maxsize=1)
def custom_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """The project's schemas for custom resources, keyed by (apiVersion, kind)."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema.get("properties", {})
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


@cache
def _custom_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = custom_schemas()[(api_version, kind)]
    definitions = _k8s_definitions_resource()
    registry = Registry().with_resource(definitions.id() or "", definitions)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def validate_document(doc: dict[str, Any]) -> list[Finding]:
    """Schema findings for one object: custom kinds against manifests/schemas, core kinds via kubernetes-validate."""
    ref = object_ref(doc)
    key = (str(doc.get("apiVersion")), str(doc.get("kind")))
    if key in custom_schemas():
        errors = sorted(_custom_validator(*key).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        return [
            Finding(
                ref,
                "schema",
                f"{_path(e.absolute_path)}: {e.message}",
                "Fix the field, or if the workshop now needs it, add it to manifests/schemas/ "
                "(checked against the upstream CRD).",
            )
            for e in errors
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [
            Finding(
                ref,
                "schema",
                f"{_path(error.path)}: {error.message}",
                f"Correct the field against the Kubernetes {KUBERNETES_VERSION} API reference.",
            )
        ]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            Finding(
                ref,
                "schema",
                f"no schema for {key[0]} {key[1]}",
                "Add a strict JSON schema for this custom resource to manifests/schemas/.",
            )
        ]
    return []


def validate(items: Iterable[Manifest | dict[str, Any]]) -> list[Finding]:
    """Schema findings for every object; an empty list means all are valid."""
    return [finding for doc in _docs(items) for finding in validate_document(doc)]


# ---------------------------------------------------------------- policy


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


def image_tag(image: str) -> str | None:
    """The tag of an image reference ('sha256:…' for digests), or None when it has neither."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def tolerates(tolerations: Iterable[dict[str, Any]] | None, taint: dict[str, Any]) -> bool:
    """Whether any toleration tolerates the taint, with the Kubernetes matching rules."""
    for tol in tolerations or []:
        operator = tol.get("operator", "Equal")
        key_ok = (tol.get("key") == taint.get("key")) or (not tol.get("key") and operator == "Exists")
        value_ok = operator == "Exists" or (tol.get("value") or "") == (taint.get("value") or "")
        effect_ok = not tol.get("effect") or tol.get("effect") == taint.get("effect")
        if key_ok and value_ok and effect_ok:
            return True
    return False


def looks_secret(name: str) -> bool:
    """Whether a variable or key name looks like it holds a secret (…_KEY, …TOKEN, PASSWORD, SECRET…)."""
    parts = {p for p in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", name) if p}
    return bool({p.upper() for p in parts} & SECRET_NAME_PARTS)


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    for c in spec.get("initContainers") or []:
        yield c.get("name", "?"), c, True
    for c in spec.get("containers") or []:
        yield c.get("name", "?"), c, False


def _accelerators(spec: dict[str, Any]) -> set[str]:
    used = set()
    for _name, container, _init in _containers(spec):
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for resource, amount in (resources.get(section) or {}).items():
                if resource in ACCELERATOR_TAINTS and str(amount) not in ("0", ""):
                    used.add(resource)
    return used


def _policy_pods(ref: str, where: str, spec: dict[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    for name, container, is_init in _containers(spec):
        at = f"{where} container {name}"
        image = container.get("image") or ""
        tag = image_tag(image) if image else None
        if not image:
            findings.append(Finding(ref, "image-pinned", f"{at}: no image", "Set an image with an exact version tag."))
        elif tag is None or tag == "latest":
            findings.append(
                Finding(
                    ref,
                    "image-pinned",
                    f"{at}: image {image!r} is not pinned",
                    "Use an exact version tag (or a digest), never latest or no tag.",
                )
            )
        resources = container.get("resources") or {}
        missing = [
            f"{section}.{res}"
            for section in ("requests", "limits")
            for res in ("cpu", "memory")
            if res not in (resources.get(section) or {})
        ]
        if missing:
            findings.append(
                Finding(
                    ref,
                    "resources",
                    f"{at}: missing {', '.join(missing)}",
                    "Set CPU and memory requests and limits, so scheduling and cost are predictable.",
                )
            )
        if (
            not is_init
            and any(p.get("containerPort") for p in container.get("ports") or [])
            and not container.get("readinessProbe")
        ):
            findings.append(
                Finding(
                    ref,
                    "readiness-probe",
                    f"{at}: serves a port but has no readinessProbe",
                    "Add a readinessProbe (e.g. httpGet /health) so traffic waits until it is ready.",
                )
            )
        for env in container.get("env") or []:
            if env.get("value") and looks_secret(env.get("name", "")):
                findings.append(
                    Finding(
                        ref,
                        "no-secret-values",
                        f"{at}: env {env['name']} has a literal value",
                        "Use valueFrom.secretKeyRef; create the Secret at run time, never in a manifest.",
                    )
                )
    for resource in sorted(_accelerators(spec)):
        taint = ACCELERATOR_TAINTS[resource]
        if not tolerates(spec.get("tolerations"), taint):
            findings.append(
                Finding(
                    ref,
                    "accelerator-toleration",
                    f"{where}: asks for {resource} but does not tolerate the {taint['key']}:{taint['effect']} taint",
                    f"Add tolerations: [{{key: {taint['key']}, operator: Exists, effect: {taint['effect']}}}].",
                )
            )
    return findings


def _serve_config_env(doc: dict[str, Any]) -> dict[str, Any]:
    text = (doc.get("spec") or {}).get("serveConfigV2")
    try:
        config = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return {}
    env: dict[str, Any] = {}
    for app in (config or {}).get("applications") or []:
        env.update(((app.get("runtime_env") or {}).get("env_vars")) or {})
    return env


def _policy_load_balancer(ref: str, doc: dict[str, Any]) -> list[Finding]:
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    kind = doc.get("kind")
    if kind == "Service" and (doc.get("spec") or {}).get("type") == "LoadBalancer":
        public = annotations.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internet-facing"
        if public and not annotations.get("service.beta.kubernetes.io/aws-load-balancer-ssl-cert"):
            return [
                Finding(
                    ref,
                    "no-public-plaintext-lb",
                    "internet-facing load balancer without TLS",
                    "Make it internal, or add aws-load-balancer-ssl-cert (and restrict source ranges).",
                )
            ]
    if kind == "Ingress":
        public = annotations.get("alb.ingress.kubernetes.io/scheme") == "internet-facing"
        has_tls = annotations.get("alb.ingress.kubernetes.io/certificate-arn") or (doc.get("spec") or {}).get("tls")
        if public and not has_tls:
            return [
                Finding(
                    ref,
                    "no-public-plaintext-lb",
                    "internet-facing ALB without TLS",
                    "Use scheme internal (port-forward for the workshop), or add a certificate-arn and HTTPS listener.",
                )
            ]
    return []


def policy_document(doc: dict[str, Any]) -> list[Finding]:
    """Policy findings for one object."""
    ref = object_ref(doc)
    findings: list[Finding] = []
    labels = (doc.get("metadata") or {}).get("labels") or {}
    if labels.get(PART_OF_LABEL) != PART_OF:
        findings.append(
            Finding(
                ref,
                "workshop-label",
                f"missing label {PART_OF_LABEL}: {PART_OF}",
                "Add the workshop label (templates use common_labels) so teardown can find it.",
            )
        )
    for where, template in pod_templates(doc):
        if where != "pod" and ((template.get("metadata") or {}).get("labels") or {}).get(PART_OF_LABEL) != PART_OF:
            findings.append(
                Finding(
                    ref,
                    "workshop-label",
                    f"{where}: pod template lacks {PART_OF_LABEL}: {PART_OF}",
                    "Label the pod template too, so its pods are recognisably the workshop's.",
                )
            )
    for where, spec in pod_specs(doc):
        findings += _policy_pods(ref, where, spec)
    if doc.get("kind") == "Secret":
        filled = [k for section in ("data", "stringData") for k, v in (doc.get(section) or {}).items() if v]
        if filled:
            findings.append(
                Finding(
                    ref,
                    "no-secret-values",
                    f"Secret holds values for {', '.join(sorted(filled))}",
                    "Never commit secret values: create the Secret at run time from the git-ignored .env.",
                )
            )
    if doc.get("kind") == "ConfigMap":
        for key, value in (doc.get("data") or {}).items():
            if value and looks_secret(key):
                findings.append(
                    Finding(
                        ref,
                        "no-secret-values",
                        f"ConfigMap key {key} looks like a secret",
                        "Move it to a Secret created at run time.",
                    )
                )
    for name, value in _serve_config_env(doc).items():
        if value and looks_secret(name):
            findings.append(
                Finding(
                    ref,
                    "no-secret-values",
                    f"serveConfigV2 env_vars {name} has a literal value",
                    "Read it from a Secret-backed environment variable of the Ray pods instead.",
                )
            )
    findings += _policy_load_balancer(ref, doc)
    return findings


def policy(items: Iterable[Manifest | dict[str, Any]]) -> list[Finding]:
    """Policy findings for every object; an empty list means every rule holds."""
    return [finding for doc in _docs(items) for finding in policy_document(doc)]


def check(items: Iterable[Manifest | dict[str, Any]]) -> list[Finding]:
    """validate() and policy() together."""
    docs = _docs(items)
    return validate(docs) + policy(docs)


def findings_table(findings: Iterable[Finding]) -> list[dict[str, str]]:
    """Findings as a list of rows (object, rule, message, fix) for a notebook table."""
    return [f.as_row() for f in findings]


# ---------------------------------------------------------------- command line


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
    parser = argparse.ArgumentParser(prog="python -m helpers.manifests", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("render", "validate", "policy", "check"):
        p = sub.add_parser(name)
        p.add_argument("--target", choices=TARGETS, default=None, help="default: settings.target")
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


if __name__ == "__main__":
    sys.exit(main())
