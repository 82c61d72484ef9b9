"""Talk to the workshop's Kubernetes cluster: reachability, server-side apply, waits with progress bars,
events and logs on failure, and a decoder that turns Pending-pod events into a plain-language cause and fix.

Only the eks target needs a cluster. Every call that needs one first runs cluster_reachable(), which
fails fast with ClusterUnreachable (what is wrong, and the fix) when there is no kubeconfig or no answer.
The decoder (decode_pending) is pure and works offline on event messages.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helpers.manifests import PART_OF, PART_OF_LABEL, Manifest, object_ref

FIELD_MANAGER = "llm-eks-workshop"
KUBECONFIG_FIX = (
    "Point kubectl at the workshop cluster: `aws eks update-kubeconfig --name <cluster> --region <region>` "
    "(or create the cluster in notebook 01 with CREATE_CLUSTER=True), then check with `kubectl get nodes`."
)


class ClusterUnreachable(RuntimeError):
    """No usable Kubernetes cluster (no kubeconfig, no context, API server not answering); `fix` says what to do."""

    def __init__(self, message: str, fix: str = KUBECONFIG_FIX) -> None:
        super().__init__(f"{message}\nFix: {fix}")
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster the kubeconfig points at."""

    context: str
    server: str
    version: str


# ---------------------------------------------------------------- connecting


def cluster_reachable(timeout: float = 5.0, context: str | None = None) -> ClusterInfo:
    """Load the kubeconfig and ask the API server for its version; raise ClusterUnreachable fast if either fails."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    path = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if not in_cluster and not os.path.exists(path):
        raise ClusterUnreachable(f"No kubeconfig at {path}: no cluster is configured on this machine.")
    try:
        if in_cluster:
            config.load_incluster_config()
            current = "in-cluster"
        else:
            config.load_kube_config(config_file=path, context=context)
            _contexts, active = config.list_kube_config_contexts(config_file=path)
            current = context or (active or {}).get("name", "?")
    except (ConfigException, TypeError, ValueError) as error:
        raise ClusterUnreachable(f"The kubeconfig at {path} cannot be used: {error}") from error
    probe = client.Configuration.get_default_copy()
    probe.retries = 0  # one attempt: an unreachable endpoint fails after `timeout`, not after several retries
    api = client.ApiClient(probe)
    server = probe.host
    try:
        version = client.VersionApi(api).get_code(_request_timeout=timeout)
    except ApiException as error:
        if error.status in (401, 403):
            raise ClusterUnreachable(
                f"The API server {server} (context {current}) refused the credentials (HTTP {error.status}).",
                "Refresh the AWS credentials (`aws sso login`), and make sure your IAM principal has an EKS access "
                "entry on the cluster (the cluster creator has one).",
            ) from error
        raise ClusterUnreachable(f"The API server {server} answered HTTP {error.status}: {error.reason}.") from error
    except Exception as error:  # urllib3 connection errors, TLS, DNS: all mean "not usable now"
        detail = getattr(error, "reason", None) or error.__class__.__name__
        raise ClusterUnreachable(
            f"The API server {server} (context {current}) did not answer within {timeout:g}s: {detail}.",
            "Check that the cluster exists and is ACTIVE (`aws eks describe-cluster`), that your AWS "
            "credentials are valid (`python -m helpers.aws identity`), then re-run update-kubeconfig.",
        ) from error
    return ClusterInfo(context=current, server=server, version=version.git_version)


def is_cluster_reachable(timeout: float = 5.0) -> bool:
    """True when a cluster answers (see cluster_reachable for the reason when not)."""
    try:
        cluster_reachable(timeout)
        return True
    except ClusterUnreachable:
        return False


def dynamic_client() -> Any:
    """A kubernetes DynamicClient for the current kubeconfig (call cluster_reachable() first)."""
    from kubernetes import client, dynamic

    return dynamic.DynamicClient(client.ApiClient())


# ---------------------------------------------------------------- apply


@dataclass(frozen=True)
class Applied:
    """The outcome of applying one object."""

    ref: str
    result: str  # "applied", "unchanged", "dry-run"


def apply(items: Iterable[Manifest | dict[str, Any]], dry_run: bool = False, force: bool = True) -> list[Applied]:
    """Server-side apply each object (field manager llm-eks-workshop) in order; refuses unlabelled objects."""
    cluster_reachable()
    dyn = dynamic_client()
    results = []
    for item in items:
        doc = item.doc if isinstance(item, Manifest) else item
        labels = (doc.get("metadata") or {}).get("labels") or {}
        if labels.get(PART_OF_LABEL) != PART_OF:
            raise ValueError(f"{object_ref(doc)} lacks the label {PART_OF_LABEL}={PART_OF}; refusing to apply it.")
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        before = _get(dyn, resource, doc)
        answer = dyn.server_side_apply(
            resource,
            body=doc,
            namespace=(doc.get("metadata") or {}).get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=force,
            dry_run="All" if dry_run else None,
        )
        changed = before is None or before.metadata.resourceVersion != answer.metadata.resourceVersion
        results.append(Applied(object_ref(doc), "dry-run" if dry_run else ("applied" if changed else "unchanged")))
    return results


def _get(dyn: Any, resource: Any, doc: dict[str, Any]) -> Any:
    from kubernetes.dynamic.exceptions import NotFoundError

    meta = doc.get("metadata") or {}
    try:
        return dyn.get(resource, name=meta["name"], namespace=meta.get("namespace"))
    except NotFoundError:
        return None


# ---------------------------------------------------------------- waiting, events, logs


def _progress(total: int, description: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="", bar_format="{desc}: {n}/{total} |{bar}| {elapsed}")


def get_object(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    """One object from the cluster as a dict, or None when it does not exist."""
    dyn = dynamic_client()
    found = _get(
        dyn, dyn.resources.get(api_version=api_version, kind=kind), {"metadata": {"name": name, "namespace": namespace}}
    )
    return found.to_dict() if found is not None else None


def condition_status(obj: dict[str, Any] | None, condition: str) -> str | None:
    """The status ("True"/"False"/"Unknown") of a condition in an object's status, or None when absent."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == condition:
            return cond.get("status")
    return None


def wait_for_condition(
    api_version: str,
    kind: str,
    name: str,
    condition: str = "Ready",
    namespace: str | None = None,
    timeout: float = 600,
    poll: float = 5,
) -> dict[str, Any]:
    """Wait until an object's condition is True, with a progress bar; on timeout print its events and raise."""
    cluster_reachable()
    deadline = time.monotonic() + timeout
    with _progress(1, f"{kind}/{name} {condition}") as bar:
        while True:
            obj = get_object(api_version, kind, name, namespace)
            if condition_status(obj, condition) == "True":
                bar.update(1)
                return obj or {}
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
    print_events(name, namespace, kind)
    raise TimeoutError(f"{kind}/{name} was not {condition} after {timeout:g}s (events above).")


def wait_for_rollout(
    name: str, namespace: str, kind: str = "Deployment", timeout: float = 900, poll: float = 5
) -> None:
    """Wait until a Deployment/StatefulSet has all replicas updated and ready; on timeout show why its pods wait."""
    from kubernetes import client

    cluster_reachable()
    apps = client.AppsV1Api()
    read = apps.read_namespaced_deployment if kind == "Deployment" else apps.read_namespaced_stateful_set
    deadline = time.monotonic() + timeout
    obj = read(name, namespace)
    with _progress(obj.spec.replicas or 0, f"{kind}/{name} ready replicas") as bar:
        while True:
            obj = read(name, namespace)
            ready = obj.status.ready_replicas or 0
            bar.total = obj.spec.replicas or 0
            bar.n = ready
            bar.refresh()
            done = (
                (obj.status.observed_generation or 0) >= obj.metadata.generation
                and ready == obj.spec.replicas
                and (obj.status.updated_replicas or 0) == obj.spec.replicas
            )
            if done:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
    selector = ",".join(f"{k}={v}" for k, v in (obj.spec.selector.match_labels or {}).items())
    report_pods(namespace, selector)
    raise TimeoutError(f"{kind}/{name} did not become ready in {timeout:g}s (pod events and logs above).")


def wait_for_nodes(pool: str, count: int = 1, timeout: float = 900, poll: float = 10) -> list[str]:
    """Watch nodes of a node pool appear and become Ready (progress bar); returns their names."""
    from kubernetes import client

    cluster_reachable()
    core = client.CoreV1Api()
    deadline = time.monotonic() + timeout
    with _progress(count, f"nodes of pool {pool} Ready") as bar:
        while True:
            nodes = core.list_node(label_selector=f"karpenter.sh/nodepool={pool}").items
            ready = [
                n.metadata.name
                for n in nodes
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            ]
            bar.n = min(len(ready), count)
            bar.set_postfix_str(
                ", ".join(
                    f"{n.metadata.name} ({n.metadata.labels.get('node.kubernetes.io/instance-type', '?')})"
                    for n in nodes
                )
            )
            bar.refresh()
            if len(ready) >= count:
                return ready
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(ready)} of {count} node(s) of pool {pool} Ready after {timeout:g}s; "
                    "see diagnose_pending() for the pods that asked for them."
                )
            time.sleep(poll)


def events_for(name: str, namespace: str | None = None, kind: str | None = None) -> list[dict[str, str]]:
    """Events about one object, oldest first, as dicts (type, reason, source, message, count)."""
    from kubernetes import client

    selector = f"involvedObject.name={name}" + (f",involvedObject.kind={kind}" if kind else "")
    core = client.CoreV1Api()
    items = (
        core.list_namespaced_event(namespace, field_selector=selector)
        if namespace
        else core.list_event_for_all_namespaces(field_selector=selector)
    ).items
    items.sort(key=lambda e: (e.last_timestamp or e.event_time or e.metadata.creation_timestamp).isoformat())
    return [
        {
            "type": e.type or "",
            "reason": e.reason or "",
            "source": (e.source.component if e.source else "") or (e.reporting_component or ""),
            "message": e.message or "",
            "count": str(e.count or 1),
        }
        for e in items
    ]


def print_events(name: str, namespace: str | None = None, kind: str | None = None) -> None:
    """Print an object's events, and the decoded cause of any scheduling failure among them."""
    events = events_for(name, namespace, kind)
    for e in events:
        print(f"{e['type']:8} {e['reason']:20} {e['source']:18} {e['message']}")
    for d in decode_events(events):
        print(d)


def pod_logs(
    name: str, namespace: str, container: str | None = None, tail_lines: int = 50, previous: bool = False
) -> str:
    """The last lines of a pod's (container's) log; '' when there is none yet."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        return client.CoreV1Api().read_namespaced_pod_log(
            name, namespace, container=container, tail_lines=tail_lines, previous=previous
        )
    except ApiException:
        return ""


def job_logs(job: str, namespace: str, tail_lines: int = 50) -> str:
    """The last log lines of a Job's newest pod ('' when it has none yet)."""
    from kubernetes import client

    pods = client.CoreV1Api().list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    if not pods:
        return ""
    newest = max(pods, key=lambda p: p.metadata.creation_timestamp)
    return pod_logs(newest.metadata.name, namespace, tail_lines=tail_lines)


def report_pods(namespace: str, label_selector: str = "") -> None:
    """For every not-ready pod matching the selector: its phase, events (decoded) and last log lines."""
    from kubernetes import client

    for pod in client.CoreV1Api().list_namespaced_pod(namespace, label_selector=label_selector).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready:
            continue
        print(f"--- pod {pod.metadata.name}: {pod.status.phase}")
        print_events(pod.metadata.name, namespace, "Pod")
        for c in pod.spec.containers:
            log = pod_logs(pod.metadata.name, namespace, c.name, tail_lines=20)
            if log:
                print(f"--- last log lines of {c.name}:\n{log}")


def diagnose_pending(namespace: str) -> dict[str, list[Diagnosis]]:
    """Every Pending pod of a namespace with the decoded causes of its scheduling events."""
    from kubernetes import client

    cluster_reachable()
    pods = client.CoreV1Api().list_namespaced_pod(namespace, field_selector="status.phase=Pending").items
    return {p.metadata.name: decode_events(events_for(p.metadata.name, namespace, "Pod")) for p in pods}


# ---------------------------------------------------------------- the Pending-pod decoder


@dataclass(frozen=True)
class Diagnosis:
    """One decoded cause of a pod that cannot be scheduled or started: what, why in plain words, and the fix."""

    cause: str
    explanation: str
    fix: str
    evidence: str

    def __str__(self) -> str:
        return f"[{self.cause}] {self.explanation}\n  fix: {self.fix}"


_TAINT_FIX = {
    "nvidia.com/gpu": "Add `tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]` to the pod, "
    "and request nvidia.com/gpu; if it needs no GPU, remove any selector that points it at the gpu pool.",
    "aws.amazon.com/neuron": "Add a toleration for aws.amazon.com/neuron (NoSchedule) and request "
    "aws.amazon.com/neuron.",
    "llm-eks-workshop/pool": "To run on the x86 pool add `tolerations: [{key: llm-eks-workshop/pool, value: x86, "
    "effect: NoSchedule}]` and nodeSelector kubernetes.io/arch: amd64; otherwise build a multi-arch "
    "image so it can run on the (untainted) Graviton pool.",
    "node.kubernetes.io/not-ready": "Wait: the node is still starting. If it stays, check the node's events.",
    "CriticalAddonsOnly": "That node is reserved for system add-ons (Auto Mode system pool); target a workshop pool.",
}

# (cause, pattern, explanation template, fix template); templates see the regex's named groups.
_RULES: list[tuple[str, str, str, str]] = [
    (
        "untolerated-taint",
        r"had untolerated taint[s(]*\)? ?\{(?P<key>[^:}]+):? ?(?P<value>[^}]*)\}",
        "{n_text}node(s) carry the taint {key} that this pod does not tolerate, so the scheduler keeps it off them.",
        "{taint_fix}",
    ),
    (
        "untolerated-taint",
        r"did not tolerate taint \(?(?P<key>[^=:\s)]+)(=(?P<value>[^:\s)]*))?:?(?P<effect>\w*)\)?",
        "Karpenter cannot use a node pool whose nodes carry the taint {key}, because the pod does not tolerate it.",
        "{taint_fix}",
    ),
    (
        "insufficient-gpu",
        r"Insufficient nvidia\.com/gpu",
        "No existing node has enough free NVIDIA GPUs for this pod. Karpenter should launch a GPU node; if none "
        "appears, the next causes (no pool matches, limits, quota, capacity) say why.",
        "Check that the pod tolerates nvidia.com/gpu and selects the gpu pool; lower the GPU request if the model "
        "fits in fewer GPUs; look at `kubectl get nodeclaims` and their events.",
    ),
    (
        "insufficient-neuron",
        r"Insufficient aws\.amazon\.com/neuron(core)?",
        "No existing node has enough free Inferentia (Neuron) devices for this pod.",
        "Check the toleration for aws.amazon.com/neuron and the inf2 pool's limits; see the NodeClaim events.",
    ),
    (
        "insufficient-cpu-memory",
        r"Insufficient (?P<resource>cpu|memory|ephemeral-storage)",
        "No existing node has enough free {resource} for this pod's requests (a new node should be launched).",
        "Wait for Karpenter to add a node; if none comes, lower the request or raise the pool's limits.",
    ),
    (
        "no-nodepool-matches",
        r"incompatible requirements,? key (?P<key>[\w./-]+),? (?P<detail>[^;]*)",
        "The pod's requirements conflict with a node pool's: {key} ({detail}).",
        "Make the pod's nodeSelector/affinity match a pool (e.g. kubernetes.io/arch of its image, "
        "karpenter.sh/nodepool), or add a pool that offers it.",
    ),
    (
        "no-nodepool-matches",
        r"no instance type (satisfied|has enough|which had enough)[^;]*",
        "No instance type that a matching node pool may launch is big enough for the pod's requests (plus daemonsets).",
        "Lower the pod's requests, or widen the pool's instance requirements (families, sizes, GPU count).",
    ),
    (
        "no-nodepool-matches",
        r"no nodepools? (found|were found|matched)|did not match any nodepool|no nodepool matched",
        "No node pool can host the pod: none exists, or every one excludes it (taints, selectors, architecture).",
        "Run the scheduling explainer (helpers.scheduling.explain) to see which rule excludes each pool, "
        "then fix the pod or a pool.",
    ),
    (
        "node-selector-mismatch",
        r"didn't match Pod's node affinity/selector",
        "{n_text}node(s) do not carry the labels the pod's nodeSelector/affinity asks for.",
        "Compare the pod's nodeSelector with the labels of the pools (`kubectl get nodepools -o yaml`); a typo in a "
        "label keeps the pod Pending forever.",
    ),
    (
        "nodepool-limit-reached",
        r"(all available instance types )?exceed(s|ed)? limits for nodepool:? \"?(?P<pool>[\w.-]+)\"?"
        r"|all available instance types exceed limits",
        "The node pool {pool} is at its limits (its spend cap), so Karpenter launches no more nodes for it.",
        "Wait for other nodes of the pool to go away, or raise spec.limits of the pool if the extra cost is intended.",
    ),
    (
        "quota-exceeded",
        r"VcpuLimitExceeded|vCPU limit of \d+|MaxSpotInstanceCountExceeded|InstanceLimitExceeded",
        "AWS refused to launch the instance: the account's vCPU quota for this instance class is too low{limit_text}.",
        "Request a quota increase: Service Quotas > EC2 > 'Running On-Demand G and VT instances' (L-DB2E81BA) "
        "for GPUs, 'Running On-Demand Inf instances' (L-1945791B) for inf2, in the workshop's region; "
        "`python -m helpers.aws quotas` shows the current values.",
    ),
    (
        "insufficient-capacity",
        r"InsufficientInstanceCapacity|insufficient capacity|UnfulfillableCapacity|no capacity",
        "AWS has no free capacity of the chosen instance types in the subnets' availability zones right now.",
        "Let Karpenter retry (it tries other types/zones); widen the pool (g5 and g6, more zones/subnets), "
        "or retry later.",
    ),
    (
        "volume-zone-conflict",
        r"volume node affinity conflict",
        "The pod's persistent volume lives in another availability zone than any node that can run the pod "
        "(EBS volumes never cross zones). Typical with volumeBindingMode: Immediate.",
        "Use the workshop's gp3 StorageClass (WaitForFirstConsumer); delete the stranded PVC so it is "
        "re-created in the pod's zone.",
    ),
    (
        "unbound-pvc",
        r"unbound immediate PersistentVolumeClaims|persistentvolumeclaim \"?(?P<pvc>[\w.-]+)\"? not found",
        "A PersistentVolumeClaim the pod mounts is not bound (missing, or its StorageClass cannot provision).",
        "Check `kubectl get pvc` and the StorageClass name; with WaitForFirstConsumer it binds once the pod "
        "is scheduled.",
    ),
    (
        "too-many-pods",
        r"Too many pods",
        "The nodes are at their pod limit (max pods per node).",
        "Karpenter will add a node; if not, raise the pool's limits.",
    ),
    (
        "wrong-architecture",
        r"exec format error",
        "The container image was built for another CPU architecture than the node "
        "(e.g. an amd64 image on a Graviton node).",
        "Build a multi-arch image (docker buildx --platform linux/amd64,linux/arm64) or pin "
        "kubernetes.io/arch to the image's.",
    ),
]


def decode_pending(message: str) -> list[Diagnosis]:
    """Turn one scheduler/Karpenter/EC2 event message into plain-language causes with fixes (possibly several)."""
    found: list[Diagnosis] = []
    seen: set[tuple[str, str]] = set()
    for cause, pattern, explanation, fix in _RULES:
        for match in re.finditer(pattern, message, flags=re.IGNORECASE):
            groups = {k: (v or "").strip() for k, v in match.groupdict().items()}
            count = re.search(r"(\d+) node\(s\)\s*$", message[: match.start()])
            limit = re.search(r"vCPU limit of (\d+)", message)
            key = groups.get("key", "")
            values = {
                **groups,
                "n_text": f"{count.group(1)} " if count else "",
                "pool": groups.get("pool") or "(see message)",
                "limit_text": f" (current limit: {limit.group(1)} vCPUs)" if limit else "",
                "taint_fix": _TAINT_FIX.get(
                    key,
                    f"Add a toleration for {key} to the pod, or remove the taint from the pool "
                    "if every pod should be allowed there.",
                ),
            }
            dedupe = (cause, key or groups.get("resource", "") or groups.get("pool", ""))
            if dedupe in seen:
                continue
            seen.add(dedupe)
            found.append(Diagnosis(cause, explanation.format(**values), fix.format(**values), match.group(0)))
    return found


def decode_events(events: Iterable[dict[str, str] | str]) -> list[Diagnosis]:
    """Decoded causes for a list of events (dicts with 'message', or plain messages), without repeats."""
    result: list[Diagnosis] = []
    for event in events:
        message = event if isinstance(event, str) else event.get("message", "")
        for d in decode_pending(message):
            if all((d.cause, d.explanation) != (r.cause, r.explanation) for r in result):
                result.append(d)
    return result


# ---------------------------------------------------------------- operators (Helm charts, pinned)

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
    from helpers.manifests import pod_templates

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
