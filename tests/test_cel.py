"""The upstream CRDs' CEL rules (x-kubernetes-validations), evaluated offline with cel-python on every rendered
NodePool, EC2NodeClass, RayService (and the RayCluster KubeRay makes from it): the rules hold, a broken object is
refused with the CRD's own message and field path, and a rule that cannot be evaluated is reported, never passed.

The CRDs are data outside the project (../shared/crds); without them these tests skip with the reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from helpers.config import Settings
from helpers.infra import manifests as m
from helpers.infra.manifests import cel

ROOT = Path(__file__).resolve().parents[1]
SHARED_CRDS = ROOT.parent / "shared" / "crds"
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop",
                    aws_region="us-west-2")
needs_crds = pytest.mark.skipif(not SHARED_CRDS.exists(), reason="upstream CRDs (../shared/crds) not present")


def rendered(flavour: str) -> list[m.Manifest]:
    return m.render("eks", flavour, include_on_demand=True, settings=SETTINGS)


def first(items: list[m.Manifest], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(i.doc for i in items if i.kind == kind))


# ---------------------------------------------------------------- the shims (no CRDs needed)


def evaluate(expression: str, value: Any) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression), functions=cel.SHIMS).evaluate({"self": celpy.json_to_cel(value)})


def test_kubernetes_cel_functions_celpy_lacks_are_provided() -> None:
    assert evaluate("self.find('^([^/]+)')", "app.kubernetes.io/part-of") == "app.kubernetes.io"
    assert evaluate("self.find('^x')", "abc") == ""
    assert list(evaluate("self.split('@')", "al2023@v20260828")) == ["al2023", "v20260828"]
    assert evaluate("self.split('@').size() == 2", "al2023@latest") == celpy.celtypes.BoolType(True)
    assert evaluate("self.lowerAscii()", "AL2023") == "al2023"
    assert list(evaluate("self.findAll('[0-9]+')", "g5 g6")) == ["5", "6"]
    assert evaluate("self.isSorted()", [1, 2, 3]) == celpy.celtypes.BoolType(True)


def test_called_functions_ignores_string_literals() -> None:
    assert cel.called_functions("self.find('^(x)') && has(self.y) && 'size(' == 'a'") == {"find", "has"}


def test_a_rule_celpy_cannot_evaluate_is_reported_not_passed(tmp_path: Path) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced",
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {
                         "type": "object",
                         "properties": {"size": {"type": "string"}, "name": {"type": "string"}},
                         "x-kubernetes-validations": [
                             {"rule": "quantity(self.size).isGreaterThan(quantity('1Gi'))", "message": "too small"},
                             {"rule": "self.name.startsWith('w')", "message": "name must start with w"},
                             {"rule": "self.name == oldSelf.name", "message": "name is immutable"},
                         ]}}}}}]},
    }
    (tmp_path / "widgets.yaml").write_text(yaml.safe_dump(crd))
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "ns"},
              "spec": {"size": "2Gi", "name": "x"}}
    report = cel.cel_report([widget], tmp_path)
    by_rule = {f.rule: f for f in report.findings}
    assert set(by_rule) == {cel.RULE, cel.UNEVALUABLE}
    assert "quantity" in by_rule[cel.UNEVALUABLE].message and "spec" in by_rule[cel.UNEVALUABLE].message
    assert by_rule[cel.RULE].object == "Widget/ns/w1" and by_rule[cel.RULE].message.startswith("spec: name must")
    assert list(report.skipped.values()) == [cel.TRANSITION_REASON], "oldSelf rules are skipped WITH the reason"


def test_missing_crds_say_so(tmp_path: Path) -> None:
    with pytest.raises(cel.CrdsUnavailable, match="no .yaml|missing"):
        cel.load_rules(tmp_path / "none")


# ---------------------------------------------------------------- the real CRDs on the rendered objects


@needs_crds
def test_every_rule_of_the_four_crds_compiles() -> None:
    rules = cel.load_rules(SHARED_CRDS)
    kinds = {kind for _, kind in rules.rules}
    assert kinds == {"NodePool", "EC2NodeClass", "RayService", "RayCluster"}
    assert rules.count() >= 60
    assert [r.describe() for rs in rules.rules.values() for r in rs if r.problem] == []


@needs_crds
@pytest.mark.parametrize("flavour", m.FLAVOURS)
def test_every_rendered_custom_resource_satisfies_the_crd_rules(flavour: str) -> None:
    report = cel.cel_report(rendered(flavour), SHARED_CRDS)
    assert report.findings == []
    # NodePools (+ EC2NodeClasses), then 2 RayServices (chapter 03's and its on-demand ray-llm-reasoning) + their RayClusters
    custom = {"auto-mode": 4 + 4, "karpenter": 8 + 4}[flavour]
    assert report.objects == custom and report.evaluations > 100
    assert report.skipped and set(report.skipped.values()) == {cel.TRANSITION_REASON}


@needs_crds
@pytest.mark.parametrize(
    "kind, change, message, field",
    [
        ("NodePool", lambda d: d["spec"]["template"]["metadata"]["labels"].update({"karpenter.sh/foo": "x"}),
         'label domain "karpenter.sh" is restricted', "spec.template.metadata.labels"),
        ("NodePool", lambda d: d["spec"]["template"]["spec"]["requirements"].append(
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}),
         'label "kubernetes.io/hostname" is restricted', "spec.template.spec.requirements[4].key"),
        ("NodePool", lambda d: d["spec"]["template"]["spec"]["requirements"].append(
            {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["6", "7"]}),
         "single positive integer value", "spec.template.spec.requirements"),  # a rule on the whole list
        ("NodePool", lambda d: d["spec"]["disruption"].update({"budgets": [{"nodes": "1", "schedule": "@daily"}]}),
         "'schedule' must be set with 'duration'", "spec.disruption.budgets"),
        ("EC2NodeClass", lambda d: d["spec"].update({"amiSelectorTerms": [{"alias": "ubuntu@latest"}]}),
         "family is not supported", "spec.amiSelectorTerms[0].alias"),
        ("EC2NodeClass", lambda d: d["spec"].update({"instanceProfile": "p"}),
         "exactly one of ['role', 'instanceProfile']", "spec"),
        ("EC2NodeClass", lambda d: d["spec"]["tags"].update({"eks:eks-cluster-name": "x"}),
         "restricted tag matching eks:eks-cluster-name", "spec.tags"),
        ("RayService", lambda d: d["spec"].update({"managedBy": "someone-else"}),
         "managedBy field value must be either", "spec.managedBy"),
    ],
)
def test_a_broken_object_is_refused_with_the_crd_message_and_path(kind: str, change, message: str,
                                                                  field: str) -> None:
    doc = first(rendered("karpenter"), kind)
    change(doc)
    findings = cel.cel_findings([doc], SHARED_CRDS)
    matching = [f for f in findings if message in f.message]
    assert matching, [f.message for f in findings]
    assert matching[0].rule == cel.RULE and matching[0].object == m.object_ref(doc)
    assert matching[0].message.startswith(field + ":"), matching[0].message


@needs_crds
def test_the_raycluster_kuberay_creates_is_checked_too() -> None:
    ray = first(rendered("auto-mode"), "RayService")
    ray["spec"]["rayClusterConfig"]["managedBy"] = "someone-else"
    refs = {f.object for f in cel.cel_findings([ray], SHARED_CRDS)}
    assert "RayService/llm-workshop/ray-serve (its RayCluster)" in refs
