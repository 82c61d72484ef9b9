"""What one object needs from another on EKS (issue 12, defects 5, 6, 9, 10): the Auto Mode ingress class and its
parameters, the network-policy switch, the agent's AWS region and its vector store; checked over one flavour's whole
rendered set, offline, and by `python -m helpers.infra.manifests check`."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from helpers.config import Settings
from helpers.errors import WorkshopError
from helpers.infra import manifests as m
from helpers.infra import teardown
from helpers.infra.k8s.operators import HelmRelease
from helpers.infra.manifests.cli import main as manifests_cli
from helpers.layers.agent import deploy as agent_deploy
from helpers.target import Connection, Target

SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop",
                    aws_region="eu-central-1")
LBC = HelmRelease(name="aws-load-balancer-controller", chart="eks/aws-load-balancer-controller",
                  repo_url="https://aws.github.io/eks-charts", version="3.5.0", namespace="kube-system",
                  purpose="ALBs for Ingresses", values={"clusterName": "test-cluster"})
ENDPOINT = "vpc-knowledge-abc123.eu-central-1.es.amazonaws.com"


def rendered(flavour: str) -> list[m.Manifest]:
    return m.render("eks", flavour, include_on_demand=True, settings=SETTINGS)


def docs(flavour: str) -> list[dict[str, Any]]:
    return [copy.deepcopy(i.doc) for i in rendered(flavour)]


def find(items: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in items if d["kind"] == kind and d["metadata"]["name"] == name)


def without(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in items if d["kind"] != kind]


def rules(findings: list[m.Finding]) -> set[str]:
    return {f.rule for f in findings}


# ---------------------------------------------------------------- the rendered set of each flavour is complete


def test_auto_mode_renders_its_alb_class_and_the_network_policy_switch() -> None:
    items = docs("auto-mode")
    cls = find(items, "IngressClass", "alb")
    assert cls["spec"] == {"controller": "eks.amazonaws.com/alb", "parameters": {
        "apiGroup": "eks.amazonaws.com", "kind": "IngressClassParams", "name": "alb"}}
    assert "annotations" not in cls["metadata"], "Auto Mode refuses annotations on an IngressClass"
    params = find(items, "IngressClassParams", "alb")
    assert params["apiVersion"] == "eks.amazonaws.com/v1" and params["spec"] == {"scheme": "internal"}
    switch = find(items, "ConfigMap", "amazon-vpc-cni")
    assert switch["metadata"]["namespace"] == "kube-system"
    assert switch["data"] == {"enable-network-policy-controller": "true"}
    assert switch["metadata"]["labels"][m.PART_OF_LABEL] == m.PART_OF, "k8s.apply refuses unlabelled objects"
    for node_class in (d for d in items if d["kind"] == "NodeClass"):
        assert node_class["spec"]["networkPolicy"] == "DefaultAllow"
    assert m.validate(items) == [] and m.policy(items) == []


def test_the_karpenter_flavour_renders_no_auto_mode_class() -> None:
    kinds = {d["kind"] for d in docs("karpenter")}
    assert not kinds & {"IngressClass", "IngressClassParams"}, "the AWS Load Balancer Controller's chart makes it"
    assert not [d for d in docs("karpenter") if d["metadata"]["name"] == "amazon-vpc-cni"]


def test_both_flavours_meet_every_prerequisite() -> None:
    assert m.prerequisites(rendered("auto-mode"), "auto-mode", SETTINGS.aws_region) == []
    provided = m.provided_ingress_classes([LBC])
    assert provided == {"alb": "ingress.k8s.aws/alb"}
    assert m.prerequisites(rendered("karpenter"), "karpenter", SETTINGS.aws_region, provided) == []


# ---------------------------------------------------------------- each prerequisite, broken


def test_an_ingress_without_its_class_is_a_finding() -> None:
    found = m.prerequisites(without(docs("auto-mode"), "IngressClass"), "auto-mode", SETTINGS.aws_region)
    assert {f.object for f in found if f.rule == "ingress-class"} == {
        "Ingress/llm-workshop/litellm", "Ingress/langfuse/langfuse", "Ingress/llm-workshop/supervisor-agent"}
    assert "ingressclass.yaml.j2" in found[0].fix
    karpenter = m.prerequisites(rendered("karpenter"), "karpenter", SETTINGS.aws_region, provided_classes={})
    assert rules(karpenter) == {"ingress-class"} and "AWS Load Balancer Controller" in karpenter[0].fix


def test_an_auto_mode_class_needs_its_params_and_the_right_controller() -> None:
    items = without(docs("auto-mode"), "IngressClassParams")
    assert rules(m.prerequisites(items, "auto-mode", SETTINGS.aws_region)) == {"ingress-class-params"}
    items = docs("auto-mode")
    find(items, "IngressClass", "alb")["spec"]["controller"] = "ingress.k8s.aws/alb"
    assert rules(m.prerequisites(items, "auto-mode", SETTINGS.aws_region)) == {"ingress-class"}
    elsewhere = m.prerequisites(docs("auto-mode"), "karpenter", SETTINGS.aws_region, m.provided_ingress_classes([LBC]))
    assert [f.object for f in elsewhere] == ["IngressClass/alb"], "an Auto Mode class on a self-managed cluster"


def test_an_internet_facing_ingress_on_an_internal_class_is_a_finding() -> None:
    items = docs("auto-mode")
    find(items, "Ingress", "litellm")["metadata"]["annotations"]["alb.ingress.kubernetes.io/scheme"] = "internet-facing"
    found = m.prerequisites(items, "auto-mode", SETTINGS.aws_region)
    assert [(f.object, f.rule) for f in found] == [("Ingress/llm-workshop/litellm", "ingress-scheme")]


def test_network_policies_on_auto_mode_need_the_switch_and_the_node_class_field() -> None:
    items = [d for d in docs("auto-mode") if d["metadata"]["name"] != "amazon-vpc-cni"]
    found = m.prerequisites(items, "auto-mode", SETTINGS.aws_region)
    policies = {m.object_ref(d) for d in items if d["kind"] == "NetworkPolicy"}
    assert rules(found) == {"network-policy-enforced"} and {f.object for f in found} == policies
    assert len(policies) >= 5, "vLLM x2, Redis, Postgres, Milvus and the MCP servers have policies"
    assert "amazon-vpc-cni" in found[0].message
    items = docs("auto-mode")
    find(items, "ConfigMap", "amazon-vpc-cni")["data"]["enable-network-policy-controller"] = "false"
    del find(items, "NodeClass", "gpu")["spec"]["networkPolicy"]
    message = m.prerequisites(items, "auto-mode", SETTINGS.aws_region)[0].message
    assert "enable-network-policy-controller" in message and "NodeClass gpu" in message


# ---------------------------------------------------------------- defect 9: the agent's AWS region


def test_the_agent_signs_for_the_chosen_region() -> None:
    agent = find(docs("auto-mode"), "Deployment", "supervisor-agent")
    template = agent["spec"]["template"]
    assert template["metadata"]["labels"][m.CALLS_AWS_LABEL] == "true"
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-central-1"


def test_a_pod_that_calls_aws_without_its_region_is_a_finding() -> None:
    items = docs("auto-mode")
    container = find(items, "Deployment", "supervisor-agent")["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "AWS_DEFAULT_REGION"]
    found = m.prerequisites(items, "auto-mode", SETTINGS.aws_region)
    assert [(f.rule, "AWS_DEFAULT_REGION is not set" in f.message) for f in found] == [("aws-region", True)]
    assert [f.rule for f in m.prerequisites(docs("auto-mode"), "auto-mode", "us-east-1")] == ["aws-region"] * 2
    items = docs("auto-mode")
    del find(items, "Deployment", "supervisor-agent")["spec"]["template"]["metadata"]["labels"][m.CALLS_AWS_LABEL]
    assert rules(m.prerequisites(items, "auto-mode", SETTINGS.aws_region)) == {"calls-aws-label"}


# ---------------------------------------------------------------- defect 10: the agent's vector store


def test_the_agent_does_not_render_for_eks_without_a_vector_store() -> None:
    with pytest.raises(WorkshopError) as error:
        m.render_chapter("08-supervisor-agent", "eks", settings=SETTINGS)
    assert "no vector store" in error.value.message and "notebook 06" in error.value.fix
    assert m.render_chapter("08-supervisor-agent", "local", settings=SETTINGS), "locally the agent uses Milvus Lite"


def test_whole_workshop_renders_carry_an_explicit_placeholder() -> None:
    agent = find(docs("karpenter"), "Deployment", "supervisor-agent")
    env = {e["name"]: e.get("value") for e in agent["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WORKSHOP_OPENSEARCH_ENDPOINT"] == m.placeholders(SETTINGS)["opensearch_endpoint"]
    assert "placeholder" in env["WORKSHOP_OPENSEARCH_ENDPOINT"]


def agent_env(items: list[m.Manifest]) -> dict[str, Any]:
    agent = next(i.doc for i in items if i.kind == "Deployment")
    return {e["name"]: e.get("value") for e in agent["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_agent_deploy_passes_the_endpoint_it_is_given() -> None:
    t = Target("eks", SETTINGS, flavour="auto-mode")
    assert agent_env(agent_deploy.render(t, opensearch_endpoint=ENDPOINT))["WORKSHOP_OPENSEARCH_ENDPOINT"] == ENDPOINT
    from_env = Target("eks", SETTINGS.model_copy(update={"opensearch_endpoint": ENDPOINT}), flavour="auto-mode")
    assert agent_env(agent_deploy.render(from_env))["WORKSHOP_OPENSEARCH_ENDPOINT"] == ENDPOINT


def test_agent_deploy_reads_the_endpoint_from_chapter_06s_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.layers.rag import deploy as rag_deploy

    t = Target("eks", SETTINGS, flavour="auto-mode")
    t.__dict__["aws"] = Connection("AWS account", info={"account": "123456789012"})  # AWS answers
    monkeypatch.setattr(rag_deploy, "stack_outputs", lambda settings=None, cloudformation=None: {
        "DomainEndpoint": ENDPOINT, "AgentRoleArn": "arn:aws:iam::123456789012:role/agent"})
    assert agent_env(agent_deploy.render(t))["WORKSHOP_OPENSEARCH_ENDPOINT"] == ENDPOINT
    monkeypatch.setattr(rag_deploy, "stack_outputs", lambda settings=None, cloudformation=None: {})
    with pytest.raises(WorkshopError, match="no DomainEndpoint"):
        agent_deploy.render(t)


def test_agent_deploy_without_aws_says_why(no_aws_credentials: None) -> None:
    t = Target("eks", SETTINGS, flavour="auto-mode")
    with pytest.raises(WorkshopError) as error:
        agent_deploy.render(t)
    assert "No OpenSearch endpoint" in error.value.message and "WORKSHOP_OPENSEARCH_ENDPOINT" in error.value.fix


# ---------------------------------------------------------------- teardown leaves kube-system alone


def test_teardown_never_deletes_the_network_policy_switch() -> None:
    plan = teardown.plan(rendered("auto-mode"))
    assert ("ConfigMap/kube-system/amazon-vpc-cni", "in protected namespace kube-system") in plan.skipped
    planned = {(s.kind, s.name) for s in plan.steps}
    assert {("IngressClass", "alb"), ("IngressClassParams", "alb")} <= planned
    order = [s.kind for s in plan.steps]
    assert max(i for i, k in enumerate(order) if k == "Ingress") < order.index("IngressClass")


# ---------------------------------------------------------------- the command that runs every check


def test_check_runs_every_check_on_both_flavours(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m helpers.infra.manifests check` (what `make check-manifests` runs): clean for both flavours."""
    assert manifests_cli(["check"]) == 0
    out = capsys.readouterr().out
    for flavour in m.FLAVOURS:
        summary = next(line for line in out.splitlines() if line.startswith(f"{flavour}: "))
        cel_part = "cel 0" if (m.MANIFESTS_DIR.parents[1] / "shared" / "crds").exists() else "cel not run"
        assert summary.endswith(f"schema 0, policy 0, karpenter labels 0, {cel_part}, prerequisites 0"), summary
    assert out.rstrip().endswith("0 finding(s)")


def test_check_reports_object_rule_message_fix_and_total(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    items = without(docs("auto-mode"), "IngressClass")
    pool = find(items, "NodePool", "gpu")
    pool["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] = "llm-eks-workshop"
    import yaml

    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(items))
    assert manifests_cli(["check", "--flavour", "auto-mode", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    broken = [line for line in lines if line.startswith("[") and "\t" in line]
    assert any("NodePool/gpu\tkarpenter-restricted-label\t" in line for line in broken)
    assert sum("\tingress-class\t" in line for line in broken) == 3
    assert all(lines[lines.index(line) + 1].startswith("    fix: ") for line in broken)
    assert lines[-1] == f"{len(broken)} finding(s)"
