"""Offline checks of the manifest renderer, the schema validation and the policy check."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from helpers.infra import manifests as m
from helpers.infra.manifests.cli import main as manifests_cli
from helpers.config import Settings
from tests.template_comments import uncommented_fields

ROOT = Path(__file__).resolve().parents[1]
SHARED_CRDS = ROOT.parent / "shared" / "crds"
SETTINGS = Settings(
    _env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop", aws_region="us-west-2"
)


def rendered(flavour: str, target: str = "eks") -> list[m.Manifest]:
    return m.render(target=target, flavour=flavour, include_on_demand=True, settings=SETTINGS)


def first(items: list[m.Manifest], kind: str, name: str | None = None) -> dict[str, Any]:
    return copy.deepcopy(next(i.doc for i in items if i.kind == kind and (name is None or i.name == name)))


def rules(findings: list[m.Finding]) -> set[str]:
    return {f.rule for f in findings}


# ---------------------------------------------------------------- every rendered manifest is clean


@pytest.mark.parametrize("target", m.TARGETS)
@pytest.mark.parametrize("flavour", m.FLAVOURS)
def test_every_rendered_manifest_passes_validation_and_policy(flavour: str, target: str) -> None:
    items = rendered(flavour, target)
    assert items, "nothing rendered"
    assert m.validate(items) == []
    assert m.policy(items) == []


def test_pinned_kubernetes_version_has_schemas_in_kubernetes_validate() -> None:
    assert m.KUBERNETES_VERSION in {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}


def test_chapter_01_renders_both_flavours_from_one_definition() -> None:
    auto, karp = rendered("auto-mode"), rendered("karpenter")
    pools = {i.name for i in auto if i.kind == "NodePool"}
    assert pools == {"gpu", "graviton", "x86", "inf2"} == {i.name for i in karp if i.kind == "NodePool"}
    assert {i.kind for i in auto} >= {"NodeClass", "StorageClass", "Namespace"}
    assert {i.kind for i in karp} >= {"EC2NodeClass", "StorageClass", "Namespace"}
    gpu_auto, gpu_karp = first(auto, "NodePool", "gpu"), first(karp, "NodePool", "gpu")
    assert gpu_auto["spec"]["template"]["spec"]["nodeClassRef"] == {
        "group": "eks.amazonaws.com",
        "kind": "NodeClass",
        "name": "gpu",
    }
    assert gpu_karp["spec"]["template"]["spec"]["nodeClassRef"]["kind"] == "EC2NodeClass"
    keys_auto = [r["key"] for r in gpu_auto["spec"]["template"]["spec"]["requirements"]]
    keys_karp = [r["key"] for r in gpu_karp["spec"]["template"]["spec"]["requirements"]]
    assert "eks.amazonaws.com/instance-family" in keys_auto and "karpenter.k8s.aws/instance-family" in keys_karp
    assert [k.split("/")[-1] for k in keys_auto] == [k.split("/")[-1] for k in keys_karp]


def test_accelerator_pools_are_tainted_and_capped() -> None:
    for flavour in m.FLAVOURS:
        items = rendered(flavour)
        gpu = first(items, "NodePool", "gpu")["spec"]
        assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in gpu["template"]["spec"]["taints"]
        assert gpu["limits"]["nvidia.com/gpu"] == "8"
        reqs = {r["key"].split("/")[-1]: r for r in gpu["template"]["spec"]["requirements"]}
        assert reqs["instance-family"]["values"] == ["g5", "g6"] and reqs["instance-gpu-count"]["values"] == ["4"]
        inf2 = first(items, "NodePool", "inf2")["spec"]
        assert {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"} in inf2["template"]["spec"]["taints"]
        x86 = first(items, "NodePool", "x86")["spec"]
        assert x86["template"]["spec"]["taints"], "the x86 pool must be tainted"
        graviton = first(items, "NodePool", "graviton")["spec"]["template"]["spec"]["requirements"]
        assert {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]} in graviton
        assert any(
            r["key"].endswith("instance-generation") and r["operator"] == "Gt" and r["values"] == ["6"]
            for r in graviton
        )
        for pool in (i for i in items if i.kind == "NodePool"):
            spec = pool.doc["spec"]
            assert spec["limits"] and spec["disruption"]["consolidateAfter"] and spec["template"]["spec"]["expireAfter"]


def test_ec2nodeclass_discovers_by_tag_and_encrypts_root_volume() -> None:
    for pool in ("gpu", "graviton", "x86", "inf2"):
        spec = first(rendered("karpenter"), "EC2NodeClass", pool)["spec"]
        assert spec["amiSelectorTerms"][0]["alias"].startswith("al2023@v"), "AMI must be pinned"
        assert spec["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "test-cluster"}}]
        assert spec["securityGroupSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "test-cluster"}}]
        root = [b for b in spec["blockDeviceMappings"] if b.get("rootVolume")][0]["ebs"]
        assert root["encrypted"] is True and root["volumeType"] == "gp3"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert spec["tags"] == {"workshop": "llm-eks-workshop"}
    gpu_root = first(rendered("karpenter"), "EC2NodeClass", "gpu")["spec"]["blockDeviceMappings"][0]["ebs"]
    assert int(gpu_root["volumeSize"].rstrip("Gi")) >= 200, "GPU nodes need room for model weights"


def test_storage_class_waits_for_first_consumer_and_encrypts() -> None:
    for flavour, provisioner in (("auto-mode", "ebs.csi.eks.amazonaws.com"), ("karpenter", "ebs.csi.aws.com")):
        sc = first(rendered(flavour), "StorageClass")
        assert sc["provisioner"] == provisioner
        assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
        assert sc["allowVolumeExpansion"] is True
        assert sc["parameters"]["type"] == "gp3" and sc["parameters"]["encrypted"] == "true"


def test_render_text_keeps_the_comments_the_notebook_shows() -> None:
    text = m.render_text(
        "01-cluster-and-nodepools", "nodepools.yaml.j2", target="eks", flavour="auto-mode", settings=SETTINGS
    )
    for phrase in ("# a spend cap", "taints:", "expireAfter:", "consolidationPolicy:", "# exactly 4 GPUs"):
        assert phrase in text


def test_every_template_field_is_commented() -> None:
    """The notebook shows the templates as the explanation: every field line has a comment on it or just above it.

    Exempt: block openers (`labels:`), list items (their `# why` sits above), and the label/tag lines that
    loops generate from data (`{{ key }}: ...`) or that follow a Jinja statement.
    """
    assert uncommented_fields(ROOT / "manifests" / "01-cluster-and-nodepools") == []


def test_overrides_and_settings_reach_the_templates() -> None:
    items = m.render(
        target="eks",
        flavour="karpenter",
        overrides={"storage_class": {"default": False}, "ami_alias": "al2023@v20260901"},
        settings=SETTINGS,
    )
    assert "annotations" not in first(items, "StorageClass")["metadata"]
    assert first(items, "EC2NodeClass", "gpu")["spec"]["amiSelectorTerms"] == [{"alias": "al2023@v20260901"}]
    assert first(items, "EC2NodeClass", "gpu")["spec"]["role"] == "KarpenterNodeRole-test-cluster"


def test_cli_render_writes_one_plain_resource_per_document(tmp_path: Path) -> None:
    assert manifests_cli(["render", "--target", "eks", "--flavour", "all", "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.rglob("*.yaml"))
    assert {p.relative_to(tmp_path).parts[0] for p in files} == set(m.FLAVOURS)
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1 and docs[0]["kind"] and "{{" not in path.read_text()
    assert manifests_cli(["check", str(tmp_path)]) == 0


# ---------------------------------------------------------------- the checks catch what they must


def test_validation_fails_on_an_unknown_nodepool_field() -> None:
    pool = first(rendered("auto-mode"), "NodePool", "gpu")
    pool["spec"]["template"]["spec"]["gpuSharing"] = True
    findings = m.validate([pool])
    assert findings and findings[0].rule == "schema" and "gpuSharing" in findings[0].message


def test_validation_fails_on_a_misspelled_top_level_nodepool_field_and_bad_values() -> None:
    pool = first(rendered("karpenter"), "NodePool", "graviton")
    pool["spec"]["limit"] = pool["spec"].pop("limits")
    pool["spec"]["disruption"]["consolidationPolicy"] = "Sometimes"
    messages = " ".join(f.message for f in m.validate([pool]))
    assert "limit" in messages and "Sometimes" in messages


def test_validation_fails_on_core_kinds_and_unknown_custom_kinds() -> None:
    sc = first(rendered("auto-mode"), "StorageClass")
    sc["volumeBindingMod"] = "Immediate"
    assert rules(m.validate([sc])) == {"schema"}
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "no schema" in m.validate([unknown])[0].message


def test_validation_checks_rayservice_pod_templates_against_core_schema() -> None:
    ray = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "r", "namespace": "llm-workshop"},
        "spec": {
            "serveConfigV2": "applications: []\n",
            "rayClusterConfig": {
                "rayVersion": "2.50.0",
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0"},
                    "template": {"spec": {"containers": [{"name": "head", "image": "rayproject/ray:2.50.0"}]}},
                },
            },
        },
    }
    assert m.validate([ray]) == []
    ray["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicey"] = "x"
    assert "imagePullPolicey" in m.validate([ray])[0].message


def _gpu_job() -> dict[str, Any]:
    return first(rendered("auto-mode"), "Job", "gpu-smoke-test")


def test_policy_fails_on_latest_or_missing_image_tag() -> None:
    for image in ("nvidia/cuda:latest", "nvidia/cuda", "registry.local:5000/cuda"):
        job = _gpu_job()
        job["spec"]["template"]["spec"]["containers"][0]["image"] = image
        assert "image-pinned" in rules(m.policy([job])), image
    job = _gpu_job()
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local:5000/cuda@sha256:" + "a" * 64
    assert "image-pinned" not in rules(m.policy([job]))


def test_policy_fails_on_a_gpu_pod_without_the_gpu_toleration() -> None:
    job = _gpu_job()
    del job["spec"]["template"]["spec"]["tolerations"]
    findings = [f for f in m.policy([job]) if f.rule == "accelerator-toleration"]
    assert findings and "nvidia.com/gpu" in findings[0].message and "tolerations" in findings[0].fix
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": dict(m.COMMON_LABELS)},
        "spec": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "x", "effect": "NoExecute"}],
            "containers": [
                {
                    "name": "c",
                    "image": "x:1",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi"},
                        "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1},
                    },
                }
            ],
        },
    }
    assert "accelerator-toleration" in rules(m.policy([pod])), "a toleration for another effect does not count"


def test_policy_fails_on_missing_resources_probes_labels_and_secrets() -> None:
    job = _gpu_job()
    container = job["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]["limits"]["memory"]
    container["ports"] = [{"containerPort": 8000}]
    container["env"] = [
        {"name": "HF_TOKEN", "value": "hf_abc"},
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
        {"name": "MAX_TOKENS", "value": "512"},
    ]
    del job["metadata"]["labels"][m.PART_OF_LABEL]
    found = m.policy([job])
    assert {"resources", "readiness-probe", "workshop-label", "no-secret-values"} <= rules(found)
    secret_findings = [f for f in found if f.rule == "no-secret-values"]
    assert len(secret_findings) == 1 and "HF_TOKEN" in secret_findings[0].message
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "labels": dict(m.COMMON_LABELS)},
        "stringData": {"token": "abc"},
    }
    assert "no-secret-values" in rules(m.policy([secret]))


def test_policy_fails_on_internet_facing_load_balancers_without_tls() -> None:
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "gw",
            "namespace": "llm-workshop",
            "labels": dict(m.COMMON_LABELS),
            "annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing"},
        },
        "spec": {"ingressClassName": "alb", "defaultBackend": {"service": {"name": "gw", "port": {"number": 80}}}},
    }
    assert "no-public-plaintext-lb" in rules(m.policy([ingress]))
    ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/certificate-arn"] = (
        "arn:aws:acm:us-west-2:1:certificate/x"
    )
    assert "no-public-plaintext-lb" not in rules(m.policy([ingress]))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "nlb",
            "labels": dict(m.COMMON_LABELS),
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"},
        },
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }
    assert "no-public-plaintext-lb" in rules(m.policy([service]))


def test_findings_are_table_rows() -> None:
    job = _gpu_job()
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "nvidia/cuda:latest"
    rows = m.findings_table(m.check([job]))
    assert rows and set(rows[0]) == {"object", "rule", "message", "fix"}


# ---------------------------------------------------------------- project schemas vs upstream CRDs


def _crd_schema(crd_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((SHARED_CRDS / crd_file).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def _walk(ours: dict[str, Any], theirs: dict[str, Any], path: str, problems: list[str]) -> None:
    if "$ref" in ours or "const" in ours:  # core Kubernetes types (checked by kubernetes-validate) and fixed values
        return
    if "enum" in ours and "enum" in theirs and not set(ours["enum"]) <= set(theirs["enum"]):
        problems.append(f"{path}: enum {ours['enum']} not within upstream {theirs['enum']}")
    for key, child in (ours.get("properties") or {}).items():
        upstream = (theirs.get("properties") or {}).get(key)
        if upstream is None:
            problems.append(f"{path}.{key}: not in the upstream CRD")
            continue
        if child.get("type") and upstream.get("type") and child["type"] != upstream["type"]:
            problems.append(f"{path}.{key}: type {child['type']} but upstream {upstream['type']}")
        _walk(child, upstream, f"{path}.{key}", problems)
    if isinstance(ours.get("items"), dict):
        _walk(ours["items"], theirs.get("items") or {}, f"{path}[]", problems)


@pytest.mark.skipif(not SHARED_CRDS.exists(), reason="upstream CRDs (../shared/crds) not present")
@pytest.mark.parametrize(
    "schema_file, crd_file",
    [
        ("nodepool.karpenter.sh-v1.json", "karpenter.sh_nodepools.yaml"),
        ("ec2nodeclass.karpenter.k8s.aws-v1.json", "karpenter.k8s.aws_ec2nodeclasses.yaml"),
        ("rayservice.ray.io-v1.json", "ray.io_rayservices.yaml"),
    ],
)
def test_project_schema_allows_only_fields_that_exist_upstream(schema_file: str, crd_file: str) -> None:
    ours = json.loads((m.SCHEMAS_DIR / schema_file).read_text())
    problems: list[str] = []
    _walk(ours["properties"]["spec"], _crd_schema(crd_file)["properties"]["spec"], "spec", problems)
    assert problems == []


def test_project_schemas_are_strict() -> None:
    def check(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} is not strict"
            for key, child in node.items():
                check(child, f"{path}.{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                check(child, f"{path}[{i}]")

    for path in m.SCHEMAS_DIR.glob("*.json"):
        check(json.loads(path.read_text()), path.name)
    assert set(m.custom_schemas()) == {
        ("karpenter.sh/v1", "NodePool"),
        ("karpenter.k8s.aws/v1", "EC2NodeClass"),
        ("eks.amazonaws.com/v1", "NodeClass"),
        ("eks.amazonaws.com/v1", "IngressClassParams"),
        ("ray.io/v1", "RayService"),
    }


def test_render_object_text_returns_one_commented_object() -> None:
    text = m.render_object_text(
        "01-cluster-and-nodepools", "nodepools.yaml.j2", "gpu", target="eks", flavour="karpenter"
    )
    doc = yaml.safe_load(text)
    assert doc["kind"] == "NodePool" and doc["metadata"]["name"] == "gpu"
    assert "# a spend cap" in text and "graviton" not in doc["metadata"]["name"]
    assert "karpenter.k8s.aws/instance-family" in text
    with pytest.raises(KeyError):
        m.render_object_text("01-cluster-and-nodepools", "nodepools.yaml.j2", "no-such-pool", target="eks")


# ---------------------------------------------------------------- issue 12: fields and images of today's upstreams


def test_rayservice_sets_no_field_kuberay_ignores() -> None:
    """serviceUnhealthySecondThreshold / deploymentUnhealthySecondThreshold are deprecated and unused since KubeRay
    1.1 (ray-project/kuberay#1685): not rendered, and the project schema refuses them."""
    ray = first(rendered("auto-mode"), "RayService")
    ignored = ("serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold")
    assert not set(ignored) & set(ray["spec"])
    for name in ignored:
        broken = copy.deepcopy(ray)
        broken["spec"][name] = 300
        assert any(name in f.message for f in m.validate([broken])), name


def _version(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tag.split("-")[0].split("."))


def test_base_images_are_current_and_one_python_everywhere() -> None:
    images = m.chapter_parameters("04-gateway")["images"]
    redis, postgres, python = (images[k].split(":", 1)[1] for k in ("redis", "postgres", "python"))
    assert _version(redis) >= (7, 4, 10) and redis.endswith("-alpine"), "redis:7.4.2-alpine was late 2024"
    assert _version(postgres) >= (16, 13) and _version(postgres)[0] == 16, "same major: no pg_upgrade of the volume"
    assert _version(python) >= (3, 11, 14) and _version(python)[:2] == (3, 11) and "slim" in python
    for path in ("manifests/07-mcp-tools/image/Dockerfile", "manifests/08-supervisor-agent/image/Dockerfile",
                 "manifests/08-supervisor-agent/image/build.sh"):
        text = (ROOT / path).read_text()
        assert images["python"] in text and "python:3.11.11" not in text, path

