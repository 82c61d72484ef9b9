"""The teardown plan, computed without a cluster: only labelled objects, never kube-system, dependency order."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from helpers import manifests as m
from helpers import teardown
from helpers.config import Settings

SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop")
LABELS = dict(m.COMMON_LABELS)


def rendered(flavour: str) -> list[dict[str, Any]]:
    return [i.doc for i in m.render(target="eks", flavour=flavour, include_on_demand=True, settings=SETTINGS)]


def strangers() -> list[dict[str, Any]]:
    """Objects the workshop must never delete: unlabelled ones and anything in kube-system."""
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-elses", "namespace": "llm-workshop"}},
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "aws-node", "namespace": "kube-system", "labels": LABELS},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system", "labels": LABELS}},
        {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "general-purpose"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "default", "labels": LABELS}},
    ]


@pytest.mark.parametrize("flavour", m.FLAVOURS)
def test_plan_covers_every_rendered_object_and_only_labelled_ones(flavour: str) -> None:
    docs = rendered(flavour)
    plan = teardown.plan(docs + strangers())
    planned = {s.ref for s in plan.steps}
    assert planned == {m.object_ref(d) for d in docs}
    skipped = dict(plan.skipped)
    assert set(skipped) == {m.object_ref(d) for d in strangers()}
    assert "not labelled" in skipped["ConfigMap/llm-workshop/someone-elses"]
    assert "kube-system" in skipped["DaemonSet/kube-system/aws-node"]
    assert all(s.namespace not in teardown.PROTECTED_NAMESPACES for s in plan.steps)
    assert not any(s.kind == "Namespace" and s.name in teardown.PROTECTED_NAMESPACES for s in plan.steps)


def test_plan_orders_deletions_by_dependency() -> None:
    docs = rendered("karpenter")
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "model-cache", "namespace": "llm-workshop", "labels": LABELS},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "vllm", "namespace": "llm-workshop", "labels": LABELS},
    }
    plan = teardown.plan(docs + [pvc, deployment])
    order = [s.kind for s in plan.steps]

    def last(kind: str) -> int:
        return max(i for i, k in enumerate(order) if k == kind)

    def first(kind: str) -> int:
        return order.index(kind)

    assert last("Deployment") < first("PersistentVolumeClaim") < first("NodePool")
    assert last("Job") < first("NodePool")
    assert last("NodePool") < first("EC2NodeClass") and last("EC2NodeClass") < first("StorageClass")
    assert order[-1] == "Namespace"
    assert [s.order for s in plan.steps] == list(range(1, len(plan.steps) + 1))


def test_plan_is_printable_without_a_cluster() -> None:
    plan = teardown.plan(flavour="auto-mode")
    text = str(plan)
    assert "NodePool/gpu" in text and "kube-system" in text and "delete" in text
    rows = plan.rows()
    assert rows and set(rows[0]) == {"#", "object", "why now"}


def test_plan_ignores_duplicates_and_never_mutates_input() -> None:
    docs = rendered("auto-mode")
    before = copy.deepcopy(docs)
    plan = teardown.plan(docs + docs)
    assert len(plan.steps) == len(docs)
    assert docs == before
