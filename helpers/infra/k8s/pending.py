"""Why is my pod Pending? Scheduler and Karpenter events decoded into a plain-language cause and the fix.

Pure: it works offline on event messages (helpers.infra.k8s.client.diagnose_pending reads them from a cluster)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


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
        "Run the scheduling explainer (helpers.infra.scheduling.explain) to see which rule excludes each pool, "
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
        "`python -m helpers.infra.aws quotas` shows the current values.",
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
