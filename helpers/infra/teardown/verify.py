"""Prove that nothing billable is left in the account: the workshop's EKS cluster, instances of its node pools, load
balancers and volumes of its namespaces, OpenSearch domains, CloudFormation stacks and ECR repositories carrying
its tag."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helpers.config import Settings, get_settings
from helpers.infra.manifests import AWS_TAG
from helpers.infra.teardown.plan import IMAGE_PREFIX, WORKSHOP_NAMESPACES_EXTRA, has_workshop_tag


@dataclass(frozen=True)
class Leftover:
    """One verification check: what was looked for, what is still there (empty: nothing), how it was found."""

    check: str
    remaining: tuple[str, ...]
    how: str

    @property
    def ok(self) -> bool:
        """True when nothing of this kind is left."""
        return not self.remaining

    def row(self) -> dict[str, str]:
        """A table row."""
        return {"check": self.check, "result": "nothing left" if self.ok else f"{len(self.remaining)} LEFT",
                "remaining": ", ".join(self.remaining), "how": self.how}


@dataclass(frozen=True)
class Verification:
    """The checks, or why they could not run (no credentials)."""

    checks: tuple[Leftover, ...]
    skipped: str = ""

    @property
    def clean(self) -> bool | None:
        """True: nothing billable left; False: something is; None: not verified."""
        return None if self.skipped else all(c.ok for c in self.checks)

    def rows(self) -> list[dict[str, str]]:
        """The checks as table rows."""
        return [c.row() for c in self.checks]


def _tags(items: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or [] if "Key" in t}


def workshop_namespaces(settings: Settings | None = None) -> tuple[str, ...]:
    """The namespaces the workshop's volumes and load balancers can come from."""
    settings = settings or get_settings()
    return (settings.namespace, *WORKSHOP_NAMESPACES_EXTRA)


def workshop_node_pools(flavour: str | None = None, settings: Settings | None = None) -> tuple[str, ...]:
    """The names of the workshop's NodePools (from chapter 01's manifests)."""
    from helpers.infra.manifests import render_chapter

    return tuple(sorted(m.name for m in render_chapter("01-cluster-and-nodepools", "eks", flavour, settings=settings)
                        if m.kind == "NodePool"))


def leftover_instances(ec2: Any, cluster: str, pools: Iterable[str]) -> Leftover:
    """Running instances Karpenter (or Auto Mode) launched for the workshop's node pools of this cluster."""
    pools = set(pools)
    found = []
    states = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    for key in ("karpenter.sh/nodepool", "eks:kubernetes-node-pool-name"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[states, {"Name": "tag-key", "Values": [key]}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    tags = _tags(instance.get("Tags"))
                    mine = tags.get("eks:eks-cluster-name") == cluster or f"kubernetes.io/cluster/{cluster}" in tags
                    if mine and (tags.get(key) in pools or has_workshop_tag(tags)):
                        found.append(f"{instance['InstanceId']} ({instance.get('InstanceType')}, pool {tags.get(key)})")
    return Leftover("EC2 instances launched for the workshop's node pools", tuple(sorted(set(found))),
                    f"ec2:DescribeInstances, tag karpenter.sh/nodepool or eks:kubernetes-node-pool-name in "
                    f"{sorted(pools)}, cluster {cluster}")


def leftover_load_balancers(elbv2: Any, cluster: str, namespaces: Iterable[str]) -> Leftover:
    """Load balancers the AWS Load Balancer Controller (or Auto Mode) made for the workshop's Services/Ingresses."""
    namespaces = set(namespaces)
    arns = {lb["LoadBalancerArn"]: lb["LoadBalancerName"]
            for page in elbv2.get_paginator("describe_load_balancers").paginate()
            for lb in page.get("LoadBalancers", [])}
    found = []
    arn_list = list(arns)
    for i in range(0, len(arn_list), 20):  # DescribeTags takes at most 20 ARNs
        for desc in elbv2.describe_tags(ResourceArns=arn_list[i:i + 20]).get("TagDescriptions", []):
            tags = _tags(desc.get("Tags"))
            of_cluster = cluster in (tags.get("elbv2.k8s.aws/cluster"), tags.get("eks:eks-cluster-name"))
            stack = tags.get("ingress.k8s.aws/stack") or tags.get("service.k8s.aws/stack") or ""
            if has_workshop_tag(tags) or (of_cluster and stack.split("/")[0] in namespaces):
                found.append(f"{arns[desc['ResourceArn']]} ({stack or 'tagged workshop'})")
    return Leftover("load balancers of the workshop's Ingresses and Services", tuple(sorted(found)),
                    f"elbv2:DescribeLoadBalancers + DescribeTags, cluster {cluster}, namespaces {sorted(namespaces)}")


def leftover_volumes(ec2: Any, namespaces: Iterable[str]) -> Leftover:
    """EBS volumes the CSI driver created for PVCs in the workshop's namespaces (or tagged with its tag)."""
    namespaces = sorted(namespaces)
    filters = [
        [{"Name": "tag:kubernetes.io/created-for/pvc/namespace", "Values": namespaces}],
        [{"Name": f"tag:{k}", "Values": [v]} for k, v in AWS_TAG.items()],
    ]
    found = []
    for flt in filters:
        for page in ec2.get_paginator("describe_volumes").paginate(Filters=flt):
            for volume in page.get("Volumes", []):
                tags = _tags(volume.get("Tags"))
                if tags.get("kubernetes.io/created-for/pvc/namespace") in namespaces or has_workshop_tag(tags):
                    pvc = tags.get("kubernetes.io/created-for/pvc/name", "-")
                    found.append(f"{volume['VolumeId']} ({volume.get('Size')} GiB, {volume.get('State')}, pvc {pvc})")
    return Leftover("EBS volumes of the workshop's PVCs", tuple(sorted(set(found))),
                    f"ec2:DescribeVolumes, tag kubernetes.io/created-for/pvc/namespace in {namespaces} or {AWS_TAG}")


def leftover_domains(opensearch: Any) -> Leftover:
    """OpenSearch domains carrying the workshop's tag."""
    found = []
    for entry in opensearch.list_domain_names().get("DomainNames", []):
        name = entry["DomainName"]
        arn = opensearch.describe_domain(DomainName=name)["DomainStatus"]["ARN"]
        if has_workshop_tag(opensearch.list_tags(ARN=arn).get("TagList", [])):
            found.append(name)
    return Leftover("OpenSearch domains", tuple(sorted(found)),
                    f"opensearch:ListDomainNames + ListTags, tag {AWS_TAG}")


def leftover_stacks(cfn: Any) -> Leftover:
    """CloudFormation stacks carrying the workshop's tag that are not deleted."""
    found = []
    for page in cfn.get_paginator("describe_stacks").paginate():
        for stack in page.get("Stacks", []):
            if has_workshop_tag(stack.get("Tags", [])) and stack.get("StackStatus") != "DELETE_COMPLETE":
                found.append(f"{stack['StackName']} ({stack['StackStatus']})")
    return Leftover("CloudFormation stacks", tuple(sorted(found)), f"cloudformation:DescribeStacks, tag {AWS_TAG}")


def leftover_repositories(ecr: Any) -> Leftover:
    """ECR repositories of the workshop's images (named llm-eks-workshop/...)."""
    found = [r["repositoryName"] for page in ecr.get_paginator("describe_repositories").paginate()
             for r in page.get("repositories", []) if r["repositoryName"].startswith(IMAGE_PREFIX)]
    return Leftover("ECR repositories (storage is billed per GB-month)", tuple(sorted(found)),
                    f"ecr:DescribeRepositories, name {IMAGE_PREFIX}*")


def leftover_clusters(eks: Any, cluster: str) -> Leftover:
    """EKS clusters carrying the workshop's tag, and the cluster of the settings' name (tagged or not): a control
    plane bills per hour (and Auto Mode's nodes run) until it is deleted."""
    names = [n for page in eks.get_paginator("list_clusters").paginate() for n in page.get("clusters", [])]
    found = []
    for name in names:
        described = eks.describe_cluster(name=name)["cluster"]
        tagged = has_workshop_tag(described.get("tags") or {})
        if tagged or name == cluster:
            why = "tagged " + ",".join(f"{k}={v}" for k, v in AWS_TAG.items()) if tagged else "the workshop's name"
            found.append(f"{name} ({described.get('status')}, {why})")
    return Leftover("EKS clusters (the control plane and Auto Mode nodes bill per hour)", tuple(sorted(found)),
                    f"eks:ListClusters + DescribeCluster, tag {AWS_TAG} or name {cluster}")


def verify_aws(settings: Settings | None = None, clients: dict[str, Any] | None = None,
               flavour: str | None = None) -> Verification:
    """Check AWS for anything billable the workshop left behind; skipped with the reason when AWS is unavailable."""
    from helpers.infra import aws

    settings = settings or get_settings()
    region = settings.aws_region
    clients = dict(clients or {})
    try:
        if not clients:
            aws.identity()  # one cheap call: no credentials -> a clear message instead of six failures
        for service in ("eks", "ec2", "elbv2", "opensearch", "cloudformation", "ecr"):
            clients.setdefault(service, aws.client(service, region))
        namespaces = workshop_namespaces(settings)
        checks = (
            leftover_clusters(clients["eks"], settings.cluster_name),
            leftover_instances(clients["ec2"], settings.cluster_name, workshop_node_pools(flavour, settings)),
            leftover_load_balancers(clients["elbv2"], settings.cluster_name, namespaces),
            leftover_volumes(clients["ec2"], namespaces),
            leftover_domains(clients["opensearch"]),
            leftover_stacks(clients["cloudformation"]),
            leftover_repositories(clients["ecr"]),
        )
    except aws.AwsUnavailable as error:
        return Verification((), f"not verified: {error.message} Fix: {error.fix}")
    except Exception as error:  # botocore errors of the individual calls
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, BotoCoreError | ClientError):
            return Verification((), f"not verified: AWS refused a check ({error}). Fix: grant the read-only "
                                    "Describe/List permissions named in the table's `how` column.")
        raise
    return Verification(checks)
