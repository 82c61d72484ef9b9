"""The teardown plan, computed without a cluster: only labelled objects, never kube-system, dependency order."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from helpers.infra import k8s
from helpers.infra import manifests as m
from helpers.infra import teardown
from helpers.config import Settings
from helpers.target import Target

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
    # rendered objects in a protected namespace (Auto Mode's kube-system/amazon-vpc-cni ConfigMap) are never deleted
    protected = {m.object_ref(d) for d in docs if teardown.is_protected(d)}
    assert planned == {m.object_ref(d) for d in docs} - protected
    skipped = dict(plan.skipped)
    assert set(skipped) == {m.object_ref(d) for d in strangers()} | protected
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
    plan = teardown.plan(Target("eks", SETTINGS, flavour="auto-mode").render_all(include_on_demand=True))
    text = str(plan)
    assert "NodePool/gpu" in text and "kube-system" in text and "delete" in text
    rows = plan.rows()
    assert rows and set(rows[0]) == {"#", "object", "why now"}


def test_plan_ignores_duplicates_and_never_mutates_input() -> None:
    docs = rendered("auto-mode")
    before = copy.deepcopy(docs)
    plan = teardown.plan(docs + docs)
    assert len(plan.steps) == len([d for d in docs if not teardown.is_protected(d)])
    assert docs == before


# ---------------------------------------------------------------- the full plan: Helm releases and AWS resources


def workshop_items(flavour: str) -> list[Any]:
    manifests = m.render(target="eks", flavour=flavour, include_on_demand=True, settings=SETTINGS)
    return [*manifests, *teardown.helm_entries(flavour, SETTINGS), *teardown.aws_entries(SETTINGS)]


@pytest.mark.parametrize("flavour", m.FLAVOURS)
def test_full_plan_lists_every_kind_the_workshop_creates_and_nothing_else(flavour: str) -> None:
    from helpers.config import ROOT

    created_kinds = {d["kind"] for d in rendered(flavour)}  # every kind of every rendered manifest
    templates = sorted(ROOT.glob("manifests/*/cloudformation/*.yaml"))
    dockerfiles = sorted(ROOT.glob("manifests/*/image/Dockerfile"))
    assert templates and dockerfiles
    expected = created_kinds | {"CloudFormationStack", "ECRRepository", "OperatorRelease"}
    full = teardown.full_plan(Target("eks", SETTINGS, flavour=flavour))
    assert teardown.planned_kinds(full) >= expected
    # one stack per CloudFormation template, one repository per image the chapters build
    stacks = [s.name for s in full.steps if s.kind == "CloudFormationStack"]
    assert len(stacks) == len(templates) and "test-cluster-knowledge-opensearch" in stacks
    repos = {s.name for s in full.steps if s.kind == "ECRRepository"}
    for dockerfile in dockerfiles:
        chapter = dockerfile.parent.parent.name
        assert m.chapter_parameters(chapter)["image"]["repository"] in repos
    assert all(r.startswith("llm-eks-workshop/") for r in repos)
    # the same plan with strangers mixed in: they are left alone, the workshop's entries are all kept
    mixed = teardown.plan(workshop_items(flavour) + strangers())
    assert [s.ref for s in mixed.steps] == [s.ref for s in full.steps]
    protected = {m.object_ref(d) for d in rendered(flavour) if teardown.is_protected(d)}  # e.g. kube-system's
    protected |= {m.object_ref(e) for e in teardown.helm_entries(flavour, SETTINGS) if teardown.is_protected(e)}
    assert {ref for ref, _ in mixed.skipped} == {m.object_ref(d) for d in strangers()} | protected
    # every planned Kubernetes object is one of the rendered, labelled ones
    k8s_refs = {s.ref for s in full.steps if s.api_version not in (teardown.HELM_API, teardown.AWS_API)}
    helm_namespaces = {f"Namespace/{r.namespace}" for r in k8s.operator_releases(flavour, "llm-workshop", CLUSTER)
                       if r.namespace not in teardown.PROTECTED_NAMESPACES} | {"Namespace/langfuse"}
    assert k8s_refs == ({m.object_ref(d) for d in rendered(flavour)} - protected) | helm_namespaces


@pytest.mark.parametrize("flavour", m.FLAVOURS)
def test_the_namespaces_of_the_helm_releases_go_last_and_protected_ones_never(flavour: str) -> None:
    full = teardown.full_plan(Target("eks", SETTINGS, flavour=flavour))
    namespaces = [s.name for s in full.steps if s.kind == "Namespace"]
    assert {"llm-workshop", "langfuse", "kuberay", "monitoring"} <= set(namespaces)
    assert not set(namespaces) & teardown.PROTECTED_NAMESPACES
    last_k8s = max(i for i, s in enumerate(full.steps) if s.api_version not in (teardown.HELM_API, teardown.AWS_API))
    assert full.steps[last_k8s].kind == "Namespace"
    releases = [i for i, s in enumerate(full.steps) if s.kind in teardown.HELM_KINDS]
    assert max(releases) < min(i for i, s in enumerate(full.steps) if s.kind == "Namespace")
    # a Helm release installed into kube-system (Karpenter's getting-started default) never plans kube-system
    kube_system = teardown.plan([teardown.plan_entry("v1", "Namespace", "kube-system", None, "01-x")])
    assert not kube_system.steps and kube_system.skipped[0][1] == "a protected namespace"


def test_full_plan_removes_consumers_first_and_aws_last() -> None:
    full = teardown.full_plan(Target("eks", SETTINGS, flavour="karpenter"))
    refs = [s.ref for s in full.steps]

    def at(fragment: str) -> int:
        return next(i for i, r in enumerate(refs) if fragment in r)

    # agent (when present) -> MCP servers -> gateway -> Langfuse -> model servers -> RayService
    chain = ["Deployment/llm-workshop/mcp-", "Deployment/llm-workshop/litellm", "HelmRelease/langfuse/langfuse",
             "Deployment/llm-workshop/vllm-", "RayService/"]
    positions = [at(f) for f in chain]
    assert positions == sorted(positions), list(zip(chain, positions, strict=True))
    assert at("PersistentVolumeClaims/langfuse") < at("NodePool/")
    # Karpenter (like the EBS CSI driver and the load balancer controller) lives in kube-system, as its guide
    # installs it: never uninstalled, so it drains the nodes of the deleted NodePools; the cluster's deletion removes it
    assert ("OperatorRelease/kube-system/karpenter", "in protected namespace kube-system") in full.skipped
    assert at("RayService/") < at("OperatorRelease/kuberay/kuberay-operator")
    assert at("StorageClass/") < at("CloudFormationStack/") < at("ECRRepository/")
    assert full.steps[-1].kind == "ECRRepository"
    rows = teardown.dry_run_rows(full, SETTINGS)
    assert {r["where"] for r in rows} == {"Kubernetes", "Helm", "AWS"}
    assert any("aws cloudformation delete-stack --stack-name test-cluster-knowledge-opensearch" in r["command"]
               for r in rows)
    assert any(r["command"].startswith("helm uninstall langfuse --namespace langfuse") for r in rows)


# ---------------------------------------------------------------- AWS steps and verification with fake clients


class FakePaginator:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(kwargs)
        return self.pages


class FakeClient:
    """A boto3 client stand-in: canned pages per paginator, canned answers per method."""

    def __init__(self, pages: dict[str, list[dict[str, Any]]] | None = None, **answers: Any) -> None:
        self.pages = pages or {}
        self.answers = answers
        self.deleted: list[tuple[str, dict[str, Any]]] = []

    def get_paginator(self, name: str) -> FakePaginator:
        return FakePaginator(self.pages.get(name, [{}]))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("delete_"):
            return lambda **kw: self.deleted.append((name, kw))
        answer = self.answers[name]
        return lambda **kw: answer(**kw) if callable(answer) else answer


WORKSHOP = [{"Key": "workshop", "Value": "llm-eks-workshop"}]
CLUSTER = "test-cluster"


def fake_clients(leftovers: bool) -> dict[str, Any]:
    def instance(iid: str, tags: dict[str, str]) -> dict[str, Any]:
        return {"InstanceId": iid, "InstanceType": "g6.12xlarge",
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}

    ours = instance("i-ours", {"karpenter.sh/nodepool": "gpu", "eks:eks-cluster-name": CLUSTER,
                               "eks:kubernetes-node-pool-name": "gpu"})
    system = instance("i-system", {"eks:kubernetes-node-pool-name": "system", "eks:eks-cluster-name": CLUSTER})
    other = instance("i-other", {"karpenter.sh/nodepool": "gpu", "eks:eks-cluster-name": "someone-else"})
    instances = [ours, system, other] if leftovers else [system, other]
    ec2 = FakeClient({
        "describe_instances": [{"Reservations": [{"Instances": instances}]}],
        "describe_volumes": [{"Volumes": ([{"VolumeId": "vol-ours", "Size": 100, "State": "available", "Tags": [
            {"Key": "kubernetes.io/created-for/pvc/namespace", "Value": "llm-workshop"},
            {"Key": "kubernetes.io/created-for/pvc/name", "Value": "vllm-reasoning-cache"}]}] if leftovers else [])
            + [{"VolumeId": "vol-other", "Size": 8, "State": "in-use",
                "Tags": [{"Key": "kubernetes.io/created-for/pvc/namespace", "Value": "payments"}]}]}],
    })
    lbs = [{"LoadBalancerArn": "arn:lb/ours", "LoadBalancerName": "k8s-llmworks-litellm"},
           {"LoadBalancerArn": "arn:lb/other", "LoadBalancerName": "k8s-payments-api"}]
    tag_descriptions = [
        {"ResourceArn": "arn:lb/ours", "Tags": [{"Key": "elbv2.k8s.aws/cluster", "Value": CLUSTER},
                                                {"Key": "ingress.k8s.aws/stack", "Value": "llm-workshop/litellm"}]},
        {"ResourceArn": "arn:lb/other", "Tags": [{"Key": "elbv2.k8s.aws/cluster", "Value": CLUSTER},
                                                 {"Key": "ingress.k8s.aws/stack", "Value": "payments/api"}]},
    ]
    elbv2 = FakeClient({"describe_load_balancers": [{"LoadBalancers": lbs if leftovers else lbs[1:]}]},
                       describe_tags=lambda ResourceArns: {"TagDescriptions": [
                           t for t in tag_descriptions if t["ResourceArn"] in ResourceArns]})
    domains = ["llm-workshop-knowledge", "search-prod"] if leftovers else ["search-prod"]
    opensearch = FakeClient(
        list_domain_names={"DomainNames": [{"DomainName": d} for d in domains]},
        describe_domain=lambda DomainName: {"DomainStatus": {"ARN": f"arn:es/{DomainName}"}},
        list_tags=lambda ARN: {"TagList": WORKSHOP if ARN.endswith("llm-workshop-knowledge") else []},
    )
    stacks = [{"StackName": "test-cluster-knowledge-opensearch", "StackStatus": "CREATE_COMPLETE", "Tags": WORKSHOP},
              {"StackName": "old-one", "StackStatus": "DELETE_COMPLETE", "Tags": WORKSHOP},
              {"StackName": "network", "StackStatus": "CREATE_COMPLETE", "Tags": []}]
    cfn = FakeClient({"describe_stacks": [{"Stacks": stacks if leftovers else stacks[1:]}]})
    repos = [{"repositoryName": "llm-eks-workshop/mcp-servers"}, {"repositoryName": "team/app"}]
    ecr = FakeClient({"describe_repositories": [{"repositories": repos if leftovers else repos[1:]}]})
    clusters = {CLUSTER: {}, "tagged-elsewhere": {"workshop": "llm-eks-workshop"}, "prod": {"team": "payments"}}
    eks = FakeClient({"list_clusters": [{"clusters": list(clusters) if leftovers else ["prod"]}]},
                     describe_cluster=lambda name: {"cluster": {"name": name, "status": "ACTIVE",
                                                                "tags": clusters[name]}})
    return {"eks": eks, "ec2": ec2, "elbv2": elbv2, "opensearch": opensearch, "cloudformation": cfn, "ecr": ecr}


def test_verify_aws_finds_only_the_workshops_leftovers() -> None:
    result = teardown.verify_aws(SETTINGS, fake_clients(leftovers=True))
    assert result.clean is False
    remaining = {c.check.split(" ")[0]: c.remaining for c in result.checks}
    assert len(result.checks) == 7
    assert remaining["EKS"] == ("tagged-elsewhere (ACTIVE, tagged workshop=llm-eks-workshop)",
                                "test-cluster (ACTIVE, the workshop's name)")
    assert remaining["EC2"] == ("i-ours (g6.12xlarge, pool gpu)",)
    assert remaining["load"] == ("k8s-llmworks-litellm (llm-workshop/litellm)",)
    assert remaining["EBS"] == ("vol-ours (100 GiB, available, pvc vllm-reasoning-cache)",)
    assert remaining["OpenSearch"] == ("llm-workshop-knowledge",)
    assert remaining["CloudFormation"] == ("test-cluster-knowledge-opensearch (CREATE_COMPLETE)",)
    assert remaining["ECR"] == ("llm-eks-workshop/mcp-servers",)
    assert all(set(r) == {"check", "result", "remaining", "how"} for r in result.rows())


def test_verify_aws_is_clean_when_only_strangers_remain() -> None:
    result = teardown.verify_aws(SETTINGS, fake_clients(leftovers=False))
    assert result.clean is True and not result.skipped
    assert all(r["result"] == "nothing left" for r in result.rows())


def test_verify_aws_without_credentials_says_so(no_aws_credentials) -> None:
    result = teardown.verify_aws(SETTINGS)
    assert result.clean is None and result.checks == ()
    assert "No AWS credentials" in result.skipped and "Fix:" in result.skipped


def test_aws_steps_touch_only_tagged_stacks_and_workshop_repositories() -> None:
    from botocore.exceptions import ClientError

    def describe_stacks(StackName: str) -> dict[str, Any]:
        tags = {"test-cluster-knowledge-opensearch": WORKSHOP, "untagged": []}
        if StackName not in tags:
            raise ClientError({"Error": {"Code": "ValidationError", "Message": "does not exist"}}, "DescribeStacks")
        return {"Stacks": [{"StackName": StackName, "StackStatus": "CREATE_COMPLETE", "Tags": tags[StackName]}]}

    cfn = FakeClient(describe_stacks=describe_stacks)
    ecr = FakeClient(describe_repositories={"repositories": [{"repositoryName": "x"}]})
    entries = [teardown.plan_entry(teardown.AWS_API, "CloudFormationStack", name, None, "06-vector-index")
               for name in ("test-cluster-knowledge-opensearch", "untagged", "gone")]
    entries += [teardown.plan_entry(teardown.AWS_API, "ECRRepository", name, None, "99-images")
                for name in ("llm-eks-workshop/mcp-servers", "team/app")]
    steps = teardown.plan(entries)
    report = teardown.execute_all(steps, dry_run=True, settings=SETTINGS, clients={"cloudformation": cfn, "ecr": ecr})
    assert report == [
        "absent  CloudFormationStack/gone",
        "would delete CloudFormationStack/test-cluster-knowledge-opensearch (CREATE_COMPLETE)",
        "skipped CloudFormationStack/untagged: it lacks the tag {'workshop': 'llm-eks-workshop'}",
        "would delete ECRRepository/llm-eks-workshop/mcp-servers and its images",
        "refused ECRRepository/team/app: not named llm-eks-workshop/...",
        "kept    EKSCluster/test-cluster: pass delete_eks_cluster=True to delete it (only when it carries the "
        "workshop's tag)",
    ]
    assert not cfn.deleted and not ecr.deleted
