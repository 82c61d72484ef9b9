"""What one object needs another object (or an installed operator) for: checked over the whole rendered set of
one flavour, offline. Each rule is a contract of an outside system that no schema states:

- `ingress-class`: an Ingress is reconciled only when its IngressClass exists. EKS Auto Mode creates none: the
  auto-mode flavour must render it (controller eks.amazonaws.com/alb); the karpenter flavour gets it from the AWS
  Load Balancer Controller's chart (an operator release that creates IngressClass `alb`, controller
  ingress.k8s.aws/alb). An Auto Mode class on a self-managed cluster would never be served.
- `ingress-class-params`: on Auto Mode the IngressClass must point at a rendered IngressClassParams
  (eks.amazonaws.com/v1); its scheme overrides each Ingress's annotation, so the two must agree (`ingress-scheme`).
- `network-policy-enforced`: Auto Mode enforces NetworkPolicies only when the kube-system/amazon-vpc-cni ConfigMap
  sets enable-network-policy-controller: "true" and every NodeClass sets spec.networkPolicy (EKS User Guide,
  "Use Network Policies with EKS Auto Mode"). Without them a policy the workshop teaches is silently ignored.
  (Self-managed clusters switch enforcement on in the VPC CNI add-on's configuration, outside the manifests.)
- `aws-region`: a pod that signs AWS requests (label llm-eks-workshop/calls-aws: "true") sets AWS_REGION and
  AWS_DEFAULT_REGION to the workshop's region; otherwise SDKs sign for a default region and get 403.
  `calls-aws-label`: a pod that is given an AWS endpoint (WORKSHOP_OPENSEARCH_ENDPOINT) carries that label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from helpers.infra.manifests.objects import Finding, Manifest, as_docs, object_ref, pod_templates

AUTO_MODE_ALB_CONTROLLER = "eks.amazonaws.com/alb"
AUTO_MODE_PARAMS_GROUP = "eks.amazonaws.com"
LBC_CONTROLLER = "ingress.k8s.aws/alb"  # the AWS Load Balancer Controller's IngressClass controller
LBC_CHART = "aws-load-balancer-controller"
VPC_CNI_CONFIGMAP = ("kube-system", "amazon-vpc-cni")
NETWORK_POLICY_SWITCH = "enable-network-policy-controller"
CALLS_AWS_LABEL = "llm-eks-workshop/calls-aws"
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
AWS_ENDPOINT_VARIABLES = ("WORKSHOP_OPENSEARCH_ENDPOINT",)
SCHEME_ANNOTATION = "alb.ingress.kubernetes.io/scheme"


def provided_ingress_classes(releases: Iterable[Any]) -> dict[str, str]:
    """IngressClass name -> controller, for the classes that operator Helm releases create themselves.

    The AWS Load Balancer Controller chart creates IngressClass `alb` (values ingressClass,
    createIngressClassResource; both default on)."""
    provided: dict[str, str] = {}
    for release in releases:
        if str(getattr(release, "chart", "")).rstrip("/").endswith(LBC_CHART):
            values = getattr(release, "values", {}) or {}
            if values.get("createIngressClassResource", True):
                provided[str(values.get("ingressClass") or "alb")] = LBC_CONTROLLER
    return provided


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {str((d.get("metadata") or {}).get("name")): d for d in docs if d.get("kind") == kind}


def _ingress_findings(docs: list[dict[str, Any]], flavour: str, provided: Mapping[str, str]) -> list[Finding]:
    classes = _by_kind(docs, "IngressClass")
    params = _by_kind([d for d in docs if str(d.get("apiVersion", "")).startswith(AUTO_MODE_PARAMS_GROUP + "/")],
                      "IngressClassParams")
    findings: list[Finding] = []
    for name, cls in classes.items():
        controller = (cls.get("spec") or {}).get("controller")
        if flavour != "auto-mode" and controller == AUTO_MODE_ALB_CONTROLLER:
            findings.append(Finding(object_ref(cls), "ingress-class", f"controller {controller} runs only on EKS "
                                    f"Auto Mode, not on the {flavour} flavour",
                                    "Render this IngressClass for auto-mode only."))
    for ingress in (d for d in docs if d.get("kind") == "Ingress"):
        ref = object_ref(ingress)
        name = (ingress.get("spec") or {}).get("ingressClassName")
        if not name:
            findings.append(Finding(ref, "ingress-class", "names no spec.ingressClassName, so no controller serves it",
                                    "Set ingressClassName: alb."))
            continue
        if name not in classes and name not in provided:
            fix = ("Render chapter 01's ingressclass.yaml.j2 for auto-mode (IngressClass with controller "
                   f"{AUTO_MODE_ALB_CONTROLLER} and its IngressClassParams)." if flavour == "auto-mode" else
                   "Install the AWS Load Balancer Controller (its chart creates IngressClass alb), or render one.")
            findings.append(Finding(ref, "ingress-class", f"ingressClassName {name}: no IngressClass {name} is "
                                    f"rendered for {flavour} and no operator release creates one", fix))
            continue
        if flavour != "auto-mode" or name not in classes:
            continue
        cls_spec = classes[name].get("spec") or {}
        ref_params = cls_spec.get("parameters") or {}
        if cls_spec.get("controller") != AUTO_MODE_ALB_CONTROLLER:
            findings.append(Finding(ref, "ingress-class", f"IngressClass {name} has controller "
                                    f"{cls_spec.get('controller')}, not Auto Mode's {AUTO_MODE_ALB_CONTROLLER}",
                                    f"Set spec.controller: {AUTO_MODE_ALB_CONTROLLER} on IngressClass {name}."))
            continue
        target = params.get(str(ref_params.get("name")))
        if ref_params.get("apiGroup") != AUTO_MODE_PARAMS_GROUP or ref_params.get("kind") != "IngressClassParams" \
                or target is None:
            findings.append(Finding(ref, "ingress-class-params", f"IngressClass {name} points at no rendered "
                                    f"{AUTO_MODE_PARAMS_GROUP} IngressClassParams ({ref_params or 'no parameters'})",
                                    "Render an eks.amazonaws.com/v1 IngressClassParams and name it in "
                                    "spec.parameters (apiGroup eks.amazonaws.com, kind IngressClassParams)."))
            continue
        scheme = (target.get("spec") or {}).get("scheme")
        wanted = ((ingress.get("metadata") or {}).get("annotations") or {}).get(SCHEME_ANNOTATION)
        if wanted and scheme and wanted != scheme:
            findings.append(Finding(ref, "ingress-scheme", f"asks for a {wanted} ALB, but IngressClassParams "
                                    f"{ref_params['name']} makes every ALB of class {name} {scheme} (it wins)",
                                    f"Use an IngressClass whose IngressClassParams has scheme {wanted}."))
    return findings


def _network_policy_findings(docs: list[dict[str, Any]], flavour: str) -> list[Finding]:
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if flavour != "auto-mode" or not policies:
        return []
    missing = []
    switch = next((d for d in docs if d.get("kind") == "ConfigMap" and (
        (d.get("metadata") or {}).get("namespace"), (d.get("metadata") or {}).get("name")) == VPC_CNI_CONFIGMAP), None)
    if switch is None or str((switch.get("data") or {}).get(NETWORK_POLICY_SWITCH)) != "true":
        missing.append(f"ConfigMap {'/'.join(VPC_CNI_CONFIGMAP)} with {NETWORK_POLICY_SWITCH}: \"true\"")
    unset = sorted(str((d.get("metadata") or {}).get("name")) for d in docs
                   if d.get("kind") == "NodeClass" and not (d.get("spec") or {}).get("networkPolicy"))
    if unset:
        missing.append(f"spec.networkPolicy on NodeClass {', '.join(unset)}")
    if not missing:
        return []
    return [Finding(object_ref(p), "network-policy-enforced", "EKS Auto Mode ignores this policy without "
                    + " and ".join(missing), "Render chapter 01's network-policy.yaml.j2 and set networkPolicy on "
                    "every NodeClass (nodeclasses.yaml.j2).") for p in policies]


def _env(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = template.get("spec") or {}
    return [(c.get("name", "?"), {e.get("name"): e for e in c.get("env") or []}) for c in spec.get("containers") or []]


def _region_findings(docs: list[dict[str, Any]], region: str | None) -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        for where, template in pod_templates(doc):
            labels = (template.get("metadata") or {}).get("labels") or {}
            marked = str(labels.get(CALLS_AWS_LABEL, "")).lower() == "true"
            for container, env in _env(template):
                at = f"{where} container {container}"
                if not marked:
                    given = [v for v in AWS_ENDPOINT_VARIABLES if v in env]
                    if given:
                        findings.append(Finding(object_ref(doc), "calls-aws-label", f"{at}: gets {given[0]}, so it "
                                                f"calls AWS, but its pod lacks {CALLS_AWS_LABEL}: \"true\"",
                                                f"Label the pod template {CALLS_AWS_LABEL}: \"true\" and set "
                                                "AWS_REGION and AWS_DEFAULT_REGION."))
                    continue
                for name in REGION_VARIABLES:
                    value = (env.get(name) or {}).get("value")
                    if not value or (region and value != region):
                        shown = f"is {value!r}" if value else "is not set"
                        findings.append(Finding(object_ref(doc), "aws-region", f"{at}: calls AWS but {name} {shown}"
                                                + (f" (the workshop's region is {region})" if region else ""),
                                                f"Set {name} to the chosen region ({{{{ aws_region }}}} in the "
                                                "template), so requests are signed for the right region."))
    return findings


def prerequisites(items: Iterable[Manifest | dict[str, Any]], flavour: str, region: str | None = None,
                  provided_classes: Mapping[str, str] | None = None) -> list[Finding]:
    """Findings for one flavour's whole rendered set: ingress classes, network-policy switch, AWS region.

    `provided_classes` are the IngressClasses operators create (provided_ingress_classes of the flavour's Helm
    releases); `region` is the workshop's AWS region (any non-empty value is accepted when None)."""
    docs = as_docs(items)
    return (_ingress_findings(docs, flavour, provided_classes or {}) + _network_policy_findings(docs, flavour)
            + _region_findings(docs, region))
