"""The workshop's rules, checked offline on every rendered object: pinned images, requests and limits, probes,
no secret values, workshop labels, accelerator tolerations, no public load balancer without TLS, and no NodePool
label or requirement that Karpenter (any version) or EKS Auto Mode refuses (helpers.infra.manifests.karpenter)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from helpers.infra.manifests.karpenter import nodepool_findings
from helpers.infra.manifests.objects import PART_OF, PART_OF_LABEL, Finding, Manifest, as_docs, object_ref, pod_specs, pod_templates
from helpers.infra.manifests.validate import validate


# Taints the accelerator node pools carry, by the extended resource a pod asks for.
ACCELERATOR_TAINTS: dict[str, dict[str, str]] = {
    "nvidia.com/gpu": {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
    "aws.amazon.com/neuron": {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"},
    "aws.amazon.com/neuroncore": {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"},
}


SECRET_NAME_PARTS = {"KEY", "APIKEY", "TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "CREDENTIALS"}


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
    findings += nodepool_findings(doc)
    return findings


def policy(items: Iterable[Manifest | dict[str, Any]]) -> list[Finding]:
    """Policy findings for every object; an empty list means every rule holds."""
    return [finding for doc in as_docs(items) for finding in policy_document(doc)]


def check(items: Iterable[Manifest | dict[str, Any]]) -> list[Finding]:
    """validate() and policy() together."""
    docs = as_docs(items)
    return validate(docs) + policy(docs)


def findings_table(findings: Iterable[Finding]) -> list[dict[str, str]]:
    """Findings as a list of rows (object, rule, message, fix) for a notebook table."""
    return [f.as_row() for f in findings]
