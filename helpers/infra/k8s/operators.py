"""The operators the workshop installs with Helm (pinned charts and values), and whether the Prometheus monitors
select the pods they are meant to scrape."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helpers.infra.k8s.client import cluster_reachable
from helpers.infra.manifests import PART_OF, PART_OF_LABEL, Manifest, object_ref


MONITORING_NAMESPACE = "monitoring"


RAY_POD_LABELS = {"ray.io/is-ray-node": "yes"}  # KubeRay puts this label on every head and worker pod it creates


RAY_METRICS_PORT = "metrics"  # KubeRay adds this container port (8080) to head and worker pods that lack it


VLLM_POD_LABELS = {PART_OF_LABEL: PART_OF, "app.kubernetes.io/component": "vllm"}  # chapter 02's pods carry these


VLLM_METRICS_PORT = "http"  # vLLM serves /metrics on its API port; chapter 02 names that container port "http"


@dataclass(frozen=True)
class HelmRelease:
    """One operator the later chapters need, as a Helm release with a pinned chart version and explicit values."""

    name: str
    chart: str  # "repo/chart", or an oci:// reference
    repo_url: str  # the Helm repository ("" for OCI charts)
    version: str  # exact chart version: never left floating
    namespace: str
    purpose: str
    values: dict[str, Any]
    pods: tuple[tuple[str, str, str], ...] = ()  # (pod, cpu request, memory request) of the Deployments it runs

    @property
    def repo_name(self) -> str:
        """The local name `helm repo add` gives the repository (the part before the slash)."""
        return self.chart.split("/", 1)[0] if not self.chart.startswith("oci://") else ""

    def commands(self, values_file: str) -> list[list[str]]:
        """The helm commands that install or upgrade this release to exactly this chart version."""
        cmds = []
        if self.repo_url:
            cmds.append(["helm", "repo", "add", "--force-update", self.repo_name, self.repo_url])
        cmds.append(
            [
                "helm", "upgrade", "--install", self.name, self.chart,
                "--version", self.version,
                "--namespace", self.namespace, "--create-namespace",
                "--values", values_file,
                "--wait", "--timeout", "10m",
            ]
        )  # fmt: skip
        return cmds

    def uninstall_command(self) -> list[str]:
        """The helm command that removes the release (teardown)."""
        return ["helm", "uninstall", self.name, "--namespace", self.namespace, "--wait"]

    def values_yaml(self) -> str:
        """The release's values as YAML (what --values receives)."""
        import yaml

        return yaml.safe_dump(self.values, sort_keys=False, width=120)


def _resources(cpu: str, memory: str, cpu_limit: str | None = None, memory_limit: str | None = None) -> dict:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit or cpu, "memory": memory_limit or memory},
    }


def monitors(namespace: str) -> list[dict[str, Any]]:
    """The PodMonitors (kube-prometheus-stack `additionalPodMonitors`) that scrape the vLLM and Ray pods."""
    return [
        {
            "name": "vllm",
            "namespaceSelector": {"matchNames": [namespace]},
            "selector": {"matchLabels": dict(VLLM_POD_LABELS)},
            "podMetricsEndpoints": [{"port": VLLM_METRICS_PORT, "path": "/metrics", "interval": "15s"}],
        },
        {
            "name": "ray",
            "namespaceSelector": {"matchNames": [namespace]},
            "selector": {"matchLabels": dict(RAY_POD_LABELS)},
            "podMetricsEndpoints": [{"port": RAY_METRICS_PORT, "path": "/metrics", "interval": "15s"}],
        },
    ]


def operator_releases(
    flavour: str, namespace: str = "llm-workshop", cluster_name: str = "llm-workshop"
) -> list[HelmRelease]:
    """The operators a flavour needs, in install order. Auto Mode ships Karpenter and the NVIDIA device plugin;
    self-managed Karpenter needs both installed (Karpenter's IAM roles and queue come from its getting-started
    stack, which this list does not create)."""
    releases: list[HelmRelease] = []
    if flavour == "karpenter":
        releases.append(
            HelmRelease(
                name="karpenter",
                chart="oci://public.ecr.aws/karpenter/karpenter",
                repo_url="",
                version="1.14.1",
                namespace="karpenter",  # its own namespace: the workshop never touches kube-system
                purpose="launches the nodes the NodePools describe (Auto Mode runs it for you)",
                values={
                    "settings": {"clusterName": cluster_name, "interruptionQueue": cluster_name},
                    "controller": {"resources": _resources("500m", "1Gi", "1", "1Gi")},
                },
                pods=(),  # runs on the cluster's managed node group, not on the nodes it launches
            )
        )
        releases.append(
            HelmRelease(
                name="nvidia-device-plugin",
                chart="nvdp/nvidia-device-plugin",
                repo_url="https://nvidia.github.io/k8s-device-plugin",
                version="0.19.0",
                namespace="nvidia-device-plugin",
                purpose="advertises each node's GPUs as nvidia.com/gpu (Auto Mode's GPU AMIs ship it)",
                values={
                    "nodeSelector": {"llm-eks-workshop/accelerator": "nvidia"},  # only on the gpu pool's nodes
                    "affinity": None,  # drop the chart's default, which waits for node-feature-discovery labels
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "resources": _resources("50m", "64Mi", "100m", "128Mi"),
                },
            )
        )
    releases.append(
        HelmRelease(
            name="kuberay-operator",
            chart="kuberay/kuberay-operator",
            repo_url="https://ray-project.github.io/kuberay-helm/",
            version="1.7.0",
            namespace="kuberay",
            purpose="turns the RayService of chapter 03 into Ray head and worker pods",
            values={"resources": _resources("100m", "512Mi", "500m", "512Mi")},
            pods=(("kuberay-operator", "100m", "512Mi"),),
        )
    )
    prometheus_resources = _resources("500m", "2Gi", "1", "4Gi")
    releases.append(
        HelmRelease(
            name="kube-prometheus-stack",
            chart="prometheus-community/kube-prometheus-stack",
            repo_url="https://prometheus-community.github.io/helm-charts",
            version="88.2.0",
            namespace=MONITORING_NAMESPACE,
            purpose="Prometheus with PodMonitors that scrape vLLM (chapter 02) and Ray (chapter 03)",
            values={
                "alertmanager": {"enabled": False},
                "grafana": {"enabled": False},  # no default admin password anywhere; chapter 05 reads the metrics
                "prometheusOperator": {"resources": _resources("100m", "256Mi", "200m", "256Mi")},
                "kube-state-metrics": {"resources": _resources("100m", "256Mi", "200m", "256Mi")},
                "prometheus": {
                    "prometheusSpec": {
                        "retention": "24h",
                        "resources": prometheus_resources,
                        "podMonitorSelectorNilUsesHelmValues": False,  # pick up every PodMonitor, not just ours
                        "serviceMonitorSelectorNilUsesHelmValues": False,
                    },
                    "additionalPodMonitors": monitors(namespace),
                },
            },
            pods=(
                ("prometheus", "500m", "2Gi"),
                ("prometheus-operator", "100m", "256Mi"),
                ("kube-state-metrics", "100m", "256Mi"),
            ),
        )
    )
    return releases


def label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def monitor_selects(monitor: dict[str, Any], namespace: str, labels: dict[str, str], ports: Iterable[str]) -> bool:
    """Whether a PodMonitor scrapes a pod: its namespace, labels and a named container port all match."""
    names = (monitor.get("namespaceSelector") or {}).get("matchNames")
    if names and namespace not in names:
        return False
    if not label_selector_matches(monitor.get("selector") or {}, labels):
        return False
    wanted = {e.get("port") for e in monitor.get("podMetricsEndpoints") or []}
    return bool(wanted & set(ports))


def _is_vllm(spec: dict[str, Any]) -> bool:
    return any("vllm" in str(c.get("image", "")).lower() for c in spec.get("containers") or [])


def monitor_coverage(
    items: Iterable[Manifest | dict[str, Any]], monitor_list: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """For every vLLM and Ray pod the rendered manifests will create: which monitor scrapes it (or none).

    Ray pods get the labels and the metrics port KubeRay adds to them, as they will have on the cluster."""
    from helpers.infra.manifests import pod_templates

    rows = []
    for item in items:
        doc = item.doc if isinstance(item, Manifest) else item
        kind = doc.get("kind")
        namespace = (doc.get("metadata") or {}).get("namespace") or ""
        for where, template in pod_templates(doc):
            spec = template.get("spec") or {}
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            ports = {p.get("name") for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("name")}
            if kind in ("RayService", "RayCluster"):
                labels.update(RAY_POD_LABELS)
                labels["ray.io/node-type"] = "head" if where == "head" else "worker"
                ports.add(RAY_METRICS_PORT)
                what = "Ray " + where
            elif _is_vllm(spec):
                what = "vLLM"
            else:
                continue
            scraped = [m["name"] for m in monitor_list if monitor_selects(m, namespace, labels, ports)]
            rows.append(
                {
                    "pod": f"{object_ref(doc)} ({where})",
                    "what": what,
                    "scraped by": ", ".join(scraped) or "NONE: no monitor selects it",
                }
            )
    return rows


def helm_available() -> str | None:
    """The path of the helm binary, or None when it is not installed."""
    import shutil

    return shutil.which("helm")


def install_operators(releases: Iterable[HelmRelease], values_dir: str, dry_run: bool = False) -> list[str]:
    """Run the helm commands of each release (needs a reachable cluster and helm on PATH); returns what was run."""
    import subprocess
    from pathlib import Path

    if not helm_available():
        raise RuntimeError("helm is not installed: install Helm 3 (https://helm.sh/docs/intro/install/) and re-run.")
    cluster_reachable()
    done = []
    for release in releases:
        values_file = Path(values_dir) / f"{release.name}-values.yaml"
        values_file.parent.mkdir(parents=True, exist_ok=True)
        values_file.write_text(release.values_yaml())
        for cmd in release.commands(str(values_file)):
            if dry_run and cmd[1] == "upgrade":
                cmd = [*cmd, "--dry-run=server"]
            subprocess.run(cmd, check=True)
            done.append(" ".join(cmd))
    return done
