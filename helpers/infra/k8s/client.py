"""The cluster as a client sees it: reachability (fail fast, with the fix), server-side apply of workshop-labelled
objects, waits with progress bars, events and logs when something does not come up."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helpers.errors import WorkshopError
from helpers.infra.k8s.pending import Diagnosis, decode_events
from helpers.infra.manifests import PART_OF, PART_OF_LABEL, Manifest, object_ref


FIELD_MANAGER = "llm-eks-workshop"


KUBECONFIG_FIX = (
    "Point kubectl at the workshop cluster: `aws eks update-kubeconfig --name <cluster> --region <region>` "
    "(or create the cluster in notebook 01 with CREATE_CLUSTER=True), then check with `kubectl get nodes`."
)


class ClusterUnreachable(WorkshopError):
    """No usable Kubernetes cluster (no kubeconfig, no context, API server not answering); `fix` says what to do."""

    fix = KUBECONFIG_FIX


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster the kubeconfig points at."""

    context: str
    server: str
    version: str


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
            "credentials are valid (`python -m helpers.infra.aws identity`), then re-run update-kubeconfig.",
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


@dataclass(frozen=True)
class ProxyAnswer:
    """What a Service answered through the API server's service proxy (any status: non-2xx is returned, not raised)."""

    status: int
    body: Any  # parsed JSON, or the text when the answer is not JSON, or None when empty


def call_service(name: str, namespace: str, path: str, body: dict[str, Any] | None = None, port: int | str = 8000,
                 headers: dict[str, str] | None = None, timeout: float = 120) -> ProxyAnswer:
    """GET (or POST a JSON body to) a Service through the API server's service proxy, with the kubeconfig's
    credentials: no port-forward, nothing exposed. The API server keeps `Authorization` for itself, so an app's own
    key travels in another header (`headers`).

    kubernetes>=37 (OpenAPI Generator 7): `param_serialize` builds the URL, headers and body (the BearerToken auth
    included), `call_api(method, url, ...)` sends them and returns the response whatever its status. The generated
    `connect_post_namespaced_service_proxy_with_path` cannot carry a body, hence this helper."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    info = cluster_reachable()
    api = client.ApiClient()
    resource = f"/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy/{path.lstrip('/')}"
    method, url, header_params, payload, post_params = api.param_serialize(
        method="POST" if body is not None else "GET", resource_path=resource, body=body,
        header_params={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        auth_settings=["BearerToken"],
    )  # fmt: skip
    try:
        response = api.call_api(method, url, header_params=header_params, body=payload, post_params=post_params,
                                _request_timeout=timeout)
        status, raw = response.status, response.read().decode("utf-8", errors="replace")
    except urllib3.exceptions.ReadTimeoutError as error:
        raise TimeoutError(f"{name}:{port}/{path.lstrip('/')} did not answer within {timeout:g}s "
                           f"(through the API server {info.server})") from error
    except (urllib3.exceptions.HTTPError, ApiException) as error:  # connection refused/reset, TLS: no answer at all
        raise ClusterUnreachable(f"The API server {info.server} stopped answering while calling {name}:{port}: "
                                 f"{getattr(error, 'reason', None) or error}") from error
    try:
        return ProxyAnswer(status, json.loads(raw) if raw else None)
    except json.JSONDecodeError:
        return ProxyAnswer(status, raw)


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


def print_events(name: str, namespace: str | None = None, kind: str | None = None) -> None:
    """Print an object's events, and the decoded cause of any scheduling failure among them."""
    events = events_for(name, namespace, kind)
    for e in events:
        print(f"{e['type']:8} {e['reason']:20} {e['source']:18} {e['message']}")
    for d in decode_events(events):
        print(d)
