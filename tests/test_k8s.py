"""helpers.infra.k8s offline: the Pending-pod decoder on realistic events, and fast failure without a cluster."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from helpers.infra import k8s

# Messages as the kube-scheduler, Karpenter and EC2 (through Karpenter's NodeClaim events) write them.
SCHEDULER_TAINT = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: }, 2 node(s) didn't "
    "match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not "
    "helpful for scheduling."
)
SCHEDULER_GPU = (
    "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: "
    "4 No preemption victims found for incoming pod."
)
KARPENTER_NO_POOL = (
    'Failed to schedule pod, incompatible with nodepool "x86", daemonset overhead={"cpu":"150m",'
    '"memory":"180Mi","pods":"3"}, did not tolerate taint (llm-eks-workshop/pool=x86:NoSchedule); '
    'incompatible with nodepool "graviton", daemonset overhead={"cpu":"150m","memory":"180Mi",'
    '"pods":"3"}, incompatible requirements, key kubernetes.io/arch, kubernetes.io/arch In [amd64] '
    "not in kubernetes.io/arch In [arm64]"
)
KARPENTER_TOO_BIG = (
    'Failed to schedule pod, incompatible with nodepool "gpu", daemonset overhead={"cpu":"150m",'
    '"memory":"180Mi","pods":"3"}, no instance type satisfied resources {"cpu":"16150m",'
    '"memory":"65716Mi","nvidia.com/gpu":"8","pods":"4"} and requirements '
    "karpenter.k8s.aws/instance-family In [g5 g6], karpenter.k8s.aws/instance-gpu-count In [4] "
    "(no instance type has enough resources)"
)
EC2_QUOTA = (
    "Launching NodeClaim: creating instance, with fleet error(s), VcpuLimitExceeded: You have requested more "
    "vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that the specified "
    "instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an "
    "adjustment to this limit."
)
EC2_CAPACITY = (
    "creating instance, insufficient capacity, with fleet error(s), InsufficientInstanceCapacity: We "
    "currently do not have sufficient g6.12xlarge capacity in the Availability Zone you requested "
    "(us-west-2d). Our system will be working on provisioning additional capacity."
)
POOL_LIMIT = 'all available instance types exceed limits for nodepool: "gpu"'
VOLUME_ZONE = (
    "0/3 nodes are available: 3 node(s) had volume node affinity conflict. preemption: 0/3 nodes are "
    "available: 3 Preemption is not helpful for scheduling."
)


def causes(message: str) -> list[str]:
    return [d.cause for d in k8s.decode_pending(message)]


def test_untolerated_gpu_taint_is_explained_with_the_toleration_to_add() -> None:
    found = k8s.decode_pending(SCHEDULER_TAINT)
    assert [d.cause for d in found] == ["untolerated-taint", "node-selector-mismatch"]
    taint = found[0]
    assert "nvidia.com/gpu" in taint.explanation and taint.explanation.startswith("1 node(s)")
    assert "tolerations" in taint.fix and "nvidia.com/gpu" in taint.fix
    assert "2 node(s)" in found[1].explanation


def test_insufficient_gpu() -> None:
    found = k8s.decode_pending(SCHEDULER_GPU)
    assert [d.cause for d in found] == ["insufficient-gpu"]
    assert "GPU" in found[0].explanation and found[0].evidence == "Insufficient nvidia.com/gpu"


def test_no_nodepool_matches_names_the_taint_and_the_requirement() -> None:
    found = k8s.decode_pending(KARPENTER_NO_POOL)
    assert [d.cause for d in found] == ["untolerated-taint", "no-nodepool-matches"]
    assert "llm-eks-workshop/pool" in found[0].explanation and "x86" in found[0].fix
    assert "kubernetes.io/arch" in found[1].explanation
    assert causes(KARPENTER_TOO_BIG) == ["no-nodepool-matches"]
    assert "big enough" in k8s.decode_pending(KARPENTER_TOO_BIG)[0].explanation


def test_quota_and_capacity_are_told_apart() -> None:
    quota = k8s.decode_pending(EC2_QUOTA)
    assert [d.cause for d in quota] == ["quota-exceeded"]
    assert "current limit: 0 vCPUs" in quota[0].explanation and "L-DB2E81BA" in quota[0].fix
    assert causes(EC2_CAPACITY) == ["insufficient-capacity"]


def test_pool_limit_and_volume_zone() -> None:
    limit = k8s.decode_pending(POOL_LIMIT)
    assert [d.cause for d in limit] == ["nodepool-limit-reached"] and "gpu" in limit[0].explanation
    zone = k8s.decode_pending(VOLUME_ZONE)
    assert [d.cause for d in zone] == ["volume-zone-conflict"] and "WaitForFirstConsumer" in zone[0].fix


def test_decode_events_merges_and_dedupes() -> None:
    events = [{"message": SCHEDULER_GPU}, {"message": SCHEDULER_GPU}, EC2_QUOTA, {"message": "Successfully assigned"}]
    assert [d.cause for d in k8s.decode_events(events)] == ["insufficient-gpu", "quota-exceeded"]
    assert k8s.decode_pending("Started container vllm") == []


def test_no_kubeconfig_fails_fast_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    start = time.monotonic()
    with pytest.raises(k8s.ClusterUnreachable) as caught:
        k8s.cluster_reachable()
    assert time.monotonic() - start < 2
    assert "No kubeconfig" in caught.value.message and "update-kubeconfig" in caught.value.fix
    assert k8s.is_cluster_reachable() is False


def test_unanswering_api_server_fails_within_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: "not-a-secret"}}}}]
contexts: [{{name: workshop, context: {{cluster: c, user: u}}}}]
current-context: workshop
""")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    start = time.monotonic()
    with pytest.raises(k8s.ClusterUnreachable) as caught:
        k8s.cluster_reachable(timeout=2)
    assert time.monotonic() - start < 15
    assert "did not answer" in caught.value.message and "workshop" in caught.value.message


def test_broken_kubeconfig_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\ncurrent-context: ''\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(k8s.ClusterUnreachable) as caught:
        k8s.cluster_reachable()
    assert "cannot be used" in caught.value.message


# ---------------------------------------------------------------- operators and monitors


def test_every_operator_chart_is_pinned_to_an_exact_version() -> None:
    import re

    for flavour in ("auto-mode", "karpenter"):
        for release in k8s.operator_releases(flavour):
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", release.version), release.name  # cert-manager: v1.19.2
            install = release.commands("values.yaml")[-1]
            assert install[install.index("--version") + 1] == release.version
            assert release.uninstall_command()[:3] == ["helm", "uninstall", release.name]
    names = {flavour: [r.name for r in k8s.operator_releases(flavour)] for flavour in ("auto-mode", "karpenter")}
    assert "nvidia-device-plugin" not in names["auto-mode"], "Auto Mode ships the device plugin"
    assert {"karpenter", "nvidia-device-plugin", "aws-ebs-csi-driver", "aws-load-balancer-controller"} <= set(
        names["karpenter"])  # what Auto Mode has built in (tests/test_charts.py renders each)
    assert names["auto-mode"] == ["kuberay-operator", "kube-prometheus-stack", "cert-manager", "clickhouse-operator"]


def _vllm_deployment(component: str = "vllm", port: str = "http") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "vllm-reasoning", "namespace": "llm-workshop"},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {
                        "app.kubernetes.io/part-of": "llm-eks-workshop",
                        "app.kubernetes.io/component": component,
                    }
                },
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.12.0",
                            "ports": [{"name": port, "containerPort": 8000}],
                        }
                    ]
                },
            }
        },
    }


def _rayservice() -> dict:
    pod = {"metadata": {"labels": {}}, "spec": {"containers": [{"name": "ray", "image": "rayproject/ray:2.60.0"}]}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "embeddings", "namespace": "llm-workshop"},
        "spec": {
            "rayClusterConfig": {
                "headGroupSpec": {"template": pod},
                "workerGroupSpecs": [{"groupName": "cpu", "template": pod}],
            }
        },
    }


def test_monitors_select_the_vllm_and_ray_pods() -> None:
    monitors = k8s.monitors("llm-workshop")
    rows = k8s.monitor_coverage([_vllm_deployment(), _rayservice()], monitors)
    assert [(r["what"], r["scraped by"]) for r in rows] == [
        ("vLLM", "vllm"),
        ("Ray head", "ray"),
        ("Ray worker cpu", "ray"),
    ]
    stack = next(r for r in k8s.operator_releases("auto-mode") if r.name == "kube-prometheus-stack")
    assert stack.values["prometheus"]["additionalPodMonitors"] == monitors


def test_a_monitor_that_selects_nothing_is_reported() -> None:
    monitors = k8s.monitors("llm-workshop")
    for bad in (_vllm_deployment(component="model"), _vllm_deployment(port="api")):
        assert k8s.monitor_coverage([bad], monitors)[0]["scraped by"].startswith("NONE")
    elsewhere = k8s.monitors("other-namespace")
    assert k8s.monitor_coverage([_rayservice()], elsewhere)[0]["scraped by"].startswith("NONE")


def test_label_selector_expressions() -> None:
    labels = {"a": "1", "b": "2"}
    assert k8s.label_selector_matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, labels)
    assert not k8s.label_selector_matches({"matchExpressions": [{"key": "c", "operator": "Exists"}]}, labels)
    absent = {"matchLabels": {"b": "2"}, "matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]}
    assert k8s.label_selector_matches(absent, labels)
    assert not k8s.label_selector_matches({"matchLabels": {"b": "3"}}, labels)


def test_install_operators_needs_helm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert k8s.helm_available() is None
    with pytest.raises(RuntimeError, match="helm is not installed"):
        k8s.install_operators(k8s.operator_releases("auto-mode"), str(tmp_path))
