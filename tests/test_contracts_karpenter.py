"""Karpenter's restricted node labels (defect 1 of issue 12): no NodePool of either flavour puts a label in a domain
that any Karpenter version or EKS Auto Mode refuses, and the policy check says which rule would refuse one."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.config import Settings
from helpers.infra import manifests as m
from helpers.infra.manifests import karpenter

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop",
                    aws_region="us-west-2")
OLD_COMMIT = "614e6d6"  # before the fix: manifests/01-nodepools/nodepools.yaml.j2 put common_labels on the nodes

# The gpu NodePool as that commit rendered it for auto-mode (what its template labels were).
OLD_GPU_NODEPOOL: dict[str, Any] = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodePool",
    "metadata": {"name": "gpu", "labels": {"app.kubernetes.io/part-of": "llm-eks-workshop"}},
    "spec": {
        "template": {
            "metadata": {"labels": {"llm-eks-workshop/pool": "gpu", "llm-eks-workshop/accelerator": "nvidia",
                                    "app.kubernetes.io/part-of": "llm-eks-workshop"}},
            "spec": {
                "nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": "gpu"},
                "requirements": [
                    {"key": "eks.amazonaws.com/instance-family", "operator": "In", "values": ["g5", "g6"]},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                ],
            },
        },
    },
}


def nodepools(flavour: str) -> list[dict[str, Any]]:
    return [i.doc for i in m.render_chapter("01-cluster-and-nodepools", "eks", flavour, settings=SETTINGS)
            if i.kind == "NodePool"]


@pytest.mark.parametrize("flavour", m.FLAVOURS)
def test_no_node_template_label_or_requirement_is_refused(flavour: str) -> None:
    pools = nodepools(flavour)
    assert {p["metadata"]["name"] for p in pools} == {"gpu", "graviton", "x86", "inf2"}
    for pool in pools:
        labels = pool["spec"]["template"]["metadata"]["labels"]
        assert m.PART_OF_LABEL not in labels, "app.kubernetes.io/* on nodes: refused by Karpenter before v1.9"
        assert all(key.startswith("llm-eks-workshop/") for key in labels), labels
        assert pool["metadata"]["labels"][m.PART_OF_LABEL] == m.PART_OF, "teardown finds the pool by this label"
        assert karpenter.nodepool_findings(pool) == []


def test_the_policy_refuses_the_old_template_and_names_the_rule() -> None:
    findings = [f for f in m.policy([OLD_GPU_NODEPOOL]) if f.rule == karpenter.RULE]
    assert len(findings) == 1, findings
    message = findings[0].message
    assert message.startswith("spec.template.metadata.labels app.kubernetes.io/part-of:")
    assert "karpenter v1.0-1.8" in message and "label app.kubernetes.io/part-of is restricted" in message
    assert "karpenter v1.9+" not in message, "v1.9 and later accept app.kubernetes.io (say which rule fires)"
    assert "llm-eks-workshop/" in findings[0].fix and "metadata.labels" in findings[0].fix


@pytest.mark.skipif(not shutil.which("git") or not (ROOT / ".git").exists(), reason="needs the git history")
def test_the_old_template_from_git_renders_refused_pools() -> None:
    """The real template of commit 614e6d6, rendered with today's context: every pool fails the rule."""
    import jinja2

    show = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:manifests/01-nodepools/nodepools.yaml.j2"],
                          capture_output=True, text=True)
    if show.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone: {show.stderr.strip()}")
    context = m.render_context("01-cluster-and-nodepools", "eks", "karpenter", settings=SETTINGS)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = lambda value: f'"{value}"'
    text = env.from_string(show.stdout).render(**context, instance_key=lambda k: m.instance_label(k, "karpenter"))
    pools = [d for d in yaml.safe_load_all(text) if d]
    assert len(pools) == 4
    assert all(any(f.rule == karpenter.RULE for f in m.policy([p])) for p in pools)


@pytest.mark.parametrize(
    "key, where, refused_by",
    [
        ("llm-eks-workshop/pool", karpenter.TEMPLATE_LABELS, set()),
        ("app.kubernetes.io/part-of", karpenter.TEMPLATE_LABELS, {"karpenter v1.0-1.8"}),
        ("example.k8s.io/team", karpenter.TEMPLATE_LABELS, {"karpenter v1.0-1.8"}),
        ("node.kubernetes.io/pool", karpenter.TEMPLATE_LABELS, set()),  # an exception domain before v1.9
        ("node-restriction.kubernetes.io/x", karpenter.TEMPLATE_LABELS, set()),
        ("kops.k8s.io/x", karpenter.TEMPLATE_LABELS, set()),
        ("kubernetes.io/hostname", karpenter.TEMPLATE_LABELS, {"karpenter v1.0-1.8", "karpenter v1.9+"}),
        ("karpenter.sh/team", karpenter.TEMPLATE_LABELS, {"karpenter v1.0-1.8", "karpenter v1.9+"}),
        ("karpenter.sh/nodepool", karpenter.TEMPLATE_LABELS, {"karpenter v1.0-1.8", "karpenter v1.9+"}),
        ("karpenter.sh/capacity-type", karpenter.REQUIREMENTS, set()),  # well known
        ("karpenter.k8s.aws/instance-family", karpenter.REQUIREMENTS, set()),  # the AWS provider's well known
        ("karpenter.k8s.aws/team", karpenter.TEMPLATE_LABELS, {"karpenter v1.0-1.8", "karpenter v1.9+"}),
        ("ai.eks.amazonaws.com/amiFamily", karpenter.TEMPLATE_LABELS, {"eks auto mode"}),  # awslabs/ai-on-eks#376
        ("eks.amazonaws.com/instance-family", karpenter.REQUIREMENTS, set()),  # Auto Mode's well known
        ("eks.amazonaws.com/instance-family", karpenter.TEMPLATE_LABELS, {"eks auto mode"}),
        ("kubernetes.io/arch", karpenter.REQUIREMENTS, set()),
    ],
)
def test_each_rule_set_as_transcribed(key: str, where: str, refused_by: set[str]) -> None:
    assert {name for name, _ in karpenter.refusals(key, where)} == refused_by


def test_a_refused_requirement_key_is_a_finding_too() -> None:
    pool = copy.deepcopy(OLD_GPU_NODEPOOL)
    pool["spec"]["template"]["metadata"]["labels"] = {"llm-eks-workshop/pool": "gpu"}
    pool["spec"]["template"]["spec"]["requirements"].append(
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["ip-10-0-0-1"]})
    findings = karpenter.nodepool_findings(pool)
    where = [f.message.split(":")[0] for f in findings]
    assert where == ["spec.template.spec.requirements[3].key kubernetes.io/hostname"]
    assert "karpenter v1.9+" in findings[0].message
