"""The operators the workshop installs with Helm (pinned charts and values, the Secrets they read), and whether the
Prometheus monitors select the pods they are meant to scrape.

Both flavours: KubeRay, kube-prometheus-stack (Prometheus with the vLLM and Ray monitors, and Grafana with chapter 05's
dashboards), cert-manager and the ClickHouse operator (Langfuse's ClickHouse, chapter 05). The `karpenter` flavour
adds what EKS Auto Mode has built in: Karpenter, the EBS CSI driver, the AWS Load Balancer Controller
(helpers.infra.k8s.addons) and the NVIDIA device plugin."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from helpers.infra.k8s.addons import ebs_csi_release, karpenter_release, load_balancer_controller_release
from helpers.infra.k8s.client import cluster_reachable
from helpers.infra.k8s.releases import GeneratedSecret, HelmRelease, resources
from helpers.infra.manifests import PART_OF, PART_OF_LABEL, Manifest, object_ref


MONITORING_NAMESPACE = "monitoring"


RAY_POD_LABELS = {"ray.io/is-ray-node": "yes"}  # KubeRay puts this label on every head and worker pod it creates


RAY_METRICS_PORT = "metrics"  # KubeRay adds this container port (8080) to head and worker pods that lack it


VLLM_POD_LABELS = {PART_OF_LABEL: PART_OF, "app.kubernetes.io/component": "vllm"}  # chapter 02's pods carry these


VLLM_METRICS_PORT = "http"  # vLLM serves /metrics on its API port; chapter 02 names that container port "http"


GRAFANA_ADMIN = GeneratedSecret(
    name="grafana-admin", namespace=MONITORING_NAMESPACE, fixed=(("admin-user", "admin"),),
    generated=("admin-password",), why="Grafana's admin login (grafana.admin.existingSecret): no password in values")


CERT_MANAGER_NAMESPACE = "cert-manager"


CLICKHOUSE_OPERATOR_NAMESPACE = "clickhouse-operator-system"


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


def _kube_prometheus_stack(namespace: str) -> HelmRelease:
    """Prometheus with the vLLM and Ray monitors, and Grafana (internal only) with chapter 05's dashboards."""
    from helpers.layers.observability import dashboards

    small = resources("10m", "32Mi", "100m", "64Mi")
    grafana = {
        "enabled": True,
        # the admin login comes from a Secret generated at apply time (GRAFANA_ADMIN), never from these values
        "admin": {"existingSecret": GRAFANA_ADMIN.name, "userKey": "admin-user", "passwordKey": "admin-password"},
        "service": {"type": "ClusterIP"},  # internal only: kubectl -n monitoring port-forward svc/...-grafana 3000:80
        "ingress": {"enabled": False},
        "testFramework": {"enabled": False},  # no `helm test` Pod: the release is what `helm upgrade` installs
        "resources": resources("100m", "256Mi", "500m", "512Mi"),
        "grafana.ini": {"analytics": {"reporting_enabled": False, "check_for_updates": False,
                                      "check_for_plugin_updates": False}},
        # its sidecars watch ConfigMaps of its own namespace only. The chart's default is every namespace, with a
        # ClusterRole that reads every Secret of the cluster; namespaced, its Role reads `monitoring` alone
        "rbac": {"namespaced": True},
        "sidecar": {"resources": small,
                    "dashboards": {"searchNamespace": None, "resource": "configmap"},
                    "datasources": {"resource": "configmap"}},
        **dashboards.grafana_values(),  # chapter 05's vLLM and Ray Serve dashboards, from manifests/05-observability
        # the chart adds a `download-dashboards` init container whenever `dashboards` is set (ours are inline JSON:
        # it fetches nothing); it gets requests and limits like every container
        "downloadDashboards": {"resources": small},
    }
    return HelmRelease(
        name="kube-prometheus-stack",
        chart="prometheus-community/kube-prometheus-stack",
        repo_url="https://prometheus-community.github.io/helm-charts",
        version="88.2.0",
        namespace=MONITORING_NAMESPACE,
        purpose="Prometheus with PodMonitors that scrape vLLM (chapter 02) and Ray (chapter 03); Grafana with their "
                "dashboards (chapter 05), internal only",
        values={
            "alertmanager": {"enabled": False},
            "grafana": grafana,
            "prometheusOperator": {
                "resources": resources("100m", "256Mi", "200m", "256Mi"),
                "admissionWebhooks": {"patch": {"resources": small}},  # the certificate Jobs (install hooks)
                "prometheusConfigReloader": {"resources": small},  # the reloader sidecar of Prometheus
            },
            "kube-state-metrics": {"resources": resources("100m", "256Mi", "200m", "256Mi")},
            "prometheus-node-exporter": {"resources": resources("20m", "32Mi", "100m", "64Mi")},
            "prometheus": {
                "prometheusSpec": {
                    "retention": "24h",
                    "resources": resources("500m", "2Gi", "1", "4Gi"),
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
            ("grafana", "120m", "320Mi"),  # grafana + its two sidecars (dashboards, datasources)
        ),
        secrets=(GRAFANA_ADMIN,),
    )


def _cert_manager() -> HelmRelease:
    """cert-manager: issues the ClickHouse operator's webhook certificate."""
    return HelmRelease(
        name="cert-manager",
        chart="jetstack/cert-manager",
        repo_url="https://charts.jetstack.io",
        # Its own release, installed (and --wait'ed) before the operator, rather than the operator chart's
        # certManager.install=true: in one release Helm would create cert-manager's CRDs and the operator's
        # Certificate and Issuer together, and the Certificate is refused until those kinds exist and
        # cert-manager's webhook answers. v1.19.2 is the version the operator chart 0.0.2 vendors.
        version="v1.19.2",
        namespace=CERT_MANAGER_NAMESPACE,
        purpose="issues the ClickHouse operator's webhook certificate (Langfuse's ClickHouse, chapter 05)",
        values={
            "crds": {"enabled": True, "keep": True},  # its CRDs with the release, kept on uninstall (its default)
            "resources": resources("20m", "64Mi", "200m", "256Mi"),
            "webhook": {"resources": resources("10m", "32Mi", "100m", "64Mi")},
            "cainjector": {"resources": resources("10m", "64Mi", "100m", "256Mi")},
            "startupapicheck": {"resources": resources("10m", "32Mi", "100m", "64Mi")},  # post-install hook Job
        },
        pods=(("cert-manager", "20m", "64Mi"), ("cert-manager-webhook", "10m", "32Mi"),
              ("cert-manager-cainjector", "10m", "64Mi")),
    )


def _clickhouse_operator() -> HelmRelease:
    """The ClickHouse operator: turns Langfuse's ClickHouseCluster and KeeperCluster into pods (chapter 05)."""
    from helpers.infra.manifests import chapter_parameters

    langfuse_namespace = chapter_parameters("05-observability")["langfuse"]["namespace"]
    return HelmRelease(
        name="clickhouse-operator",
        chart="oci://ghcr.io/clickhouse/clickhouse-operator-helm",
        repo_url="",
        version="0.0.2",  # the operator langfuse chart 2.0.0 renders ClickHouseCluster/KeeperCluster v1alpha1 for
        namespace=CLICKHOUSE_OPERATOR_NAMESPACE,
        purpose="runs Langfuse's ClickHouse and Keeper (ClickHouseCluster, KeeperCluster) for chapter 05",
        values={
            "manager": {
                "image": {"tag": "v0.0.2"},  # the chart 0.0.2 still names image v0.0.1
                "resources": resources("10m", "64Mi", "500m", "128Mi"),
                # it watches Langfuse's namespace only. Not through the chart's `watchNamespaces`: at 0.0.2 that sets
                # WATCH_NAMESPACES, while the operator reads WATCH_NAMESPACE (internal/environment/environment.go)
                "env": [{"name": "WATCH_NAMESPACE", "value": langfuse_namespace}],
            },
            # its admission webhooks fill in the clusters' defaults (the controller relies on them) and need a
            # certificate: cert-manager (the release before this one) issues it
            "certManager": {"enable": True, "install": False},
            "webhook": {"enable": True},
        },
        pods=(("clickhouse-operator", "10m", "64Mi"),),
    )


def operator_releases(flavour: str, namespace: str = "llm-workshop", cluster_name: str = "llm-workshop",
                      region: str | None = None, vpc_id: str | None = None) -> list[HelmRelease]:
    """The operators a flavour needs, in install order. EKS Auto Mode runs Karpenter, the EBS CSI driver, load
    balancing and the NVIDIA device plugin itself; the `karpenter` flavour installs them (Karpenter's IAM roles and
    queue come from its getting-started stack; each add-on's IAM role is data here, releases.PodIdentity).
    `region` and `vpc_id` (the cluster's) let the karpenter flavour's controllers work without instance metadata."""
    from helpers.infra.manifests import chapter_parameters

    releases: list[HelmRelease] = []
    if flavour == "karpenter":
        ingress_class = chapter_parameters("01-cluster-and-nodepools")["ingress_class"]
        releases += [
            karpenter_release(cluster_name),
            ebs_csi_release(region),
            load_balancer_controller_release(cluster_name, region, vpc_id, ingress_class),
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
                    "resources": resources("50m", "64Mi", "100m", "128Mi"),
                },
            ),
        ]
    releases.append(
        HelmRelease(
            name="kuberay-operator",
            chart="kuberay/kuberay-operator",
            repo_url="https://ray-project.github.io/kuberay-helm/",
            version="1.7.0",
            namespace="kuberay",
            purpose="turns the RayService of chapter 03 into Ray head and worker pods",
            values={"resources": resources("100m", "512Mi", "500m", "512Mi")},
            pods=(("kuberay-operator", "100m", "512Mi"),),
        )
    )
    releases += [_kube_prometheus_stack(namespace), _cert_manager(), _clickhouse_operator()]
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


def ensure_release_secrets(release: HelmRelease) -> list[str]:
    """Create (or keep) the release's generated Secrets, in its namespace (labelled, so teardown may remove it)."""
    import base64

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from helpers.infra.k8s.client import apply
    from helpers.infra.manifests import COMMON_LABELS

    if not release.secrets:
        return []
    core, objects = client.CoreV1Api(), []
    for generated in release.secrets:
        try:
            data = core.read_namespaced_secret(generated.name, generated.namespace).data or {}
            existing = {k: base64.b64decode(v).decode() for k, v in data.items()}
        except ApiException as error:
            if error.status != 404:
                raise
            existing = {}
        objects += [{"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": generated.namespace, "labels": dict(COMMON_LABELS)}},
                    generated.manifest(existing)]
    apply(objects)
    return [f"{s.namespace}/{s.name}" for s in release.secrets]


def ensure_release_namespace(namespace: str) -> list[str]:
    """Create the release's namespace with the workshop label (helm's --create-namespace would leave it unlabelled,
    and teardown deletes only what carries the label); the cluster's own namespaces are left as they are."""
    from helpers.infra.k8s.client import apply
    from helpers.infra.manifests import COMMON_LABELS

    if namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
        return []
    apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(COMMON_LABELS)}}])
    return [f"namespace {namespace} (labelled {next(iter(COMMON_LABELS))}, so teardown removes it)"]


def install_operators(releases: Iterable[HelmRelease], values_dir: str, dry_run: bool = False) -> list[str]:
    """Create each release's Secrets, then run its helm commands (needs a reachable cluster and helm on PATH);
    returns what was done."""
    import subprocess
    from pathlib import Path

    if not helm_available():
        raise RuntimeError("helm is not installed: install helm v4 (https://helm.sh/docs/intro/install/; `make helm` "
                           "puts one in .venvs/bin on x86_64 Linux) and re-run.")
    cluster_reachable()
    done = []
    for release in releases:
        values_file = Path(values_dir) / f"{release.name}-values.yaml"
        values_file.parent.mkdir(parents=True, exist_ok=True)
        values_file.write_text(release.values_yaml())
        if not dry_run:
            done += ensure_release_namespace(release.namespace)
            done += [f"secret {ref} (generated, kept across runs)" for ref in ensure_release_secrets(release)]
        for cmd in release.commands(str(values_file)):
            if dry_run and cmd[1] == "upgrade":
                cmd = [*cmd, "--dry-run=server"]
            subprocess.run(cmd, check=True)
            done.append(" ".join(cmd))
    return done
