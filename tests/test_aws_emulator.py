"""The eks path's AWS steps against a real AWS emulator: moto's server (moto[server] 5.2.5) on a loopback port.

Nothing here is stubbed: boto3 sends real HTTP requests to `moto_server` (AWS_ENDPOINT_URL, fake credentials,
us-west-2) and the workshop's own functions make them: the OpenSearch stack's create and delete
(helpers.layers.rag.deploy), the OpenSearch service-linked role, the EKS cluster request and the tag-scoped, opt-in
cluster deletion, ECR repositories, and teardown's plan, execute_all and verify_aws, which must report what the
workshop left (tagged) before teardown and nothing after it, while leaving everything else alone.

What moto 5.2.5 cannot do, and what checks it instead:
- CloudFormation cannot create the OpenSearch template as written: its Outputs `!GetAtt Domain.DomainEndpoint` and
  `!GetAtt Domain.Arn` make create_stack fail with HTTP 500 (test_the_real_template_is_beyond_moto). The stack is
  created from the same template minus the outputs that read unmodelled resources (emulator_template, passed to
  rag.deploy.deploy(template=...)); moto then creates AgentRole and DomainSecurityGroup and silently SKIPS
  AWS::OpenSearchService::Domain and AWS::EKS::PodIdentityAssociation (MOTO_SKIPPED, asserted exactly). The
  domain's own API (opensearch create/describe/list_tags/delete) works and is used for the leftover check;
  the template's security properties are checked by tests/test_vectorstore.py (security_checks, cfn-lint).
- iam create_service_linked_role names the role AWSServiceRoleForopensearchservice (AWS:
  AWSServiceRoleForAmazonOpenSearchService) and answers a repeat with EntityAlreadyExists (AWS: InvalidInput
  "... has been taken in this account"): the AWS answer is checked against botocore's model with a Stubber here.
- eks: computeConfig/storageConfig/accessConfig (Auto Mode) are accepted but not stored, so auto_mode_node_role
  cannot be run (Stubber: tests/test_aws.py::test_auto_mode_node_role_reads_the_cluster);
  resourcesVpcConfig lacks vpcId and clusterSecurityGroupId, so rag.deploy.cluster_network cannot be run (Stubber:
  test_cluster_network_reads_the_clusters_vpc below); create_pod_identity_association, create_access_entry and
  list_addons answer 404 (the workshop creates its one association inside the CloudFormation stack).
- pricing get_products: not implemented (Stubber: tests/test_aws.py::test_on_demand_prices_use_the_price_list_api).
- service-quotas: only ServiceCode "vpc"; the ec2 vCPU quotas answer NoSuchResource and list_service_quotas 500
  (Stubber: tests/test_aws.py::test_quotas_fall_back_to_the_aws_default).
- ssm: no EKS-optimised AMI public parameters (Stubber: tests/test_aws.py::test_recommended_al2023_alias_reads_ssm).
- resourcegroupstaggingapi covers ec2 and elbv2 but not eks, ecr, es or iam: the workshop does not use it (verify_aws
  asks each service's own API).
- No Kubernetes runs here: what Karpenter/Auto Mode (instances), the EBS CSI driver (volumes) and the load balancer
  controller (ALBs) do when teardown deletes the NodePools, PVCs and Ingresses, the test does with the EC2 and ELBv2
  APIs (controller_cleanup), and says so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY

from helpers.config import Settings
from helpers.infra import aws, teardown
from helpers.infra.manifests import AWS_TAG
from helpers.layers.rag import deploy as rag_deploy
from tests.conftest import free_port

REGION = "us-west-2"
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop",
                    aws_region=REGION)
TAGS = [{"Key": k, "Value": v} for k, v in AWS_TAG.items()]
UNMODELLED = ("AWS::OpenSearchService::Domain", "AWS::EKS::PodIdentityAssociation")  # moto's CloudFormation skips them
MOTO_SKIPPED = {"Domain": "AWS::OpenSearchService::Domain", "AgentPodIdentity": "AWS::EKS::PodIdentityAssociation"}
STACK = "test-cluster-knowledge-opensearch"
MOTO_LOG: list[str] = []  # the running moto_server's log file (its warnings name what CloudFormation skipped)


# ---------------------------------------------------------------- the emulator


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto_server on a free loopback port for this module; stopped (by its pid) at the end."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip(f"{exe} is missing: install the pinned moto[server] (make env)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    MOTO_LOG[:] = [str(log)]
    with log.open("w") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def emulator(moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty emulated account: every boto3 client of this process talks to moto with fake credentials."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10)
    empty = tmp_path / "empty-aws-config"
    empty.write_text("")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                        "WORKSHOP_AWS_REGION": REGION, "AWS_CONFIG_FILE": str(empty),
                        "AWS_SHARED_CREDENTIALS_FILE": str(empty), "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    yield moto_server


def client(service: str) -> Any:
    return aws.client(service, REGION)


def network() -> dict[str, Any]:
    """A VPC with private subnets in two zones and a cluster security group."""
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{zone}",
                                 TagSpecifications=[{"ResourceType": "subnet", "Tags": [
                                     {"Key": "kubernetes.io/role/internal-elb", "Value": "1"}]}])["Subnet"]["SubnetId"]
               for i, zone in ((1, "a"), (2, "b"))]
    group = ec2.create_security_group(GroupName="eks-cluster-sg", Description="cluster", VpcId=vpc)["GroupId"]
    return {"vpc_id": vpc, "subnet_ids": subnets, "cluster_security_group": group}


def emulator_template(path: Path) -> tuple[Path, list[str]]:
    """The workshop's template minus the outputs that read resources moto cannot model (written as JSON)."""
    template = rag_deploy.load_template()
    unmodelled = {name for name, r in template["Resources"].items() if r.get("Type") in UNMODELLED}
    removed = [key for key, out in template["Outputs"].items()
               if any(f'"{name}"' in json.dumps(out["Value"]) for name in unmodelled)]
    for key in removed:
        del template["Outputs"][key]
    path.write_text(json.dumps(template, indent=1))
    return path, removed


def remaining(verification: teardown.Verification) -> dict[str, tuple[str, ...]]:
    """Each check's leftovers, by the check's first word (EKS, EC2, load, EBS, OpenSearch, CloudFormation, ECR)."""
    assert verification.skipped == "", verification.skipped
    return {c.check.split(" ")[0]: c.remaining for c in verification.checks}


# ---------------------------------------------------------------- the OpenSearch stack


@pytest.mark.services
def test_the_real_template_is_beyond_moto(emulator: str) -> None:
    """Why the stack tests use emulator_template: moto accepts the template but cannot create it (its Outputs read
    the Domain, a resource type moto does not model). If this starts to pass, drop emulator_template."""
    from botocore.exceptions import ClientError
    from botocore.parsers import ResponseParserError

    cfn = client("cloudformation")
    cfn.validate_template(TemplateBody=rag_deploy.template_text())
    params = rag_deploy.stack_parameters(**network(), settings=SETTINGS)
    with pytest.raises((ClientError, ResponseParserError)):
        rag_deploy.deploy(params, SETTINGS, wait=False)


@pytest.mark.services
def test_opensearch_stack_create_and_delete_with_the_service_linked_role_first(emulator: str, tmp_path: Path) -> None:
    template, removed = emulator_template(tmp_path / "opensearch-domain.json")
    assert removed == ["DomainEndpoint", "DomainArn"]
    net = network()
    iam, cfn = client("iam"), client("cloudformation")
    params = rag_deploy.stack_parameters(**net, settings=SETTINGS)

    outputs = rag_deploy.deploy(params, SETTINGS, template=template)  # the service-linked role, then the stack

    linked = [r for r in iam.list_roles(PathPrefix="/aws-service-role/")["Roles"]
              if "opensearchservice" in json.dumps(r["AssumeRolePolicyDocument"])]
    assert len(linked) == 1  # moto names it AWSServiceRoleForopensearchservice; AWS ...ForAmazonOpenSearchService
    assert rag_deploy.ensure_service_linked_role() == "exists"  # idempotent: a second deploy does not fail on it
    stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert {"Key": "workshop", "Value": "llm-eks-workshop"} in stack["Tags"]
    summaries = cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    resources = {r["LogicalResourceId"]: r for r in summaries if r["PhysicalResourceId"]}
    template_resources = {name: r["Type"] for name, r in rag_deploy.load_template()["Resources"].items()}
    # exactly what moto does not model is skipped (listed blank, and named in its log); everything else was created
    assert {name: r["ResourceType"] for name, r in resources.items()} == {
        name: kind for name, kind in template_resources.items() if name not in MOTO_SKIPPED}
    assert len(summaries) - len(resources) == len(MOTO_SKIPPED)
    assert {kind for name, kind in template_resources.items() if name in MOTO_SKIPPED} == set(MOTO_SKIPPED.values())
    warned = set(re.findall(r"Tried to parse (\S+) but it's not supported", Path(MOTO_LOG[0]).read_text()))
    assert warned == set(UNMODELLED)
    role_arn = outputs["AgentRoleArn"]
    assert outputs["IndexReplicas"] == "0" and "DomainEndpoint" not in outputs
    role = iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    group_id = resources["DomainSecurityGroup"]["PhysicalResourceId"]
    group = client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    assert group["VpcId"] == net["vpc_id"]
    assert [(p["FromPort"], p["ToPort"], [g["GroupId"] for g in p["UserIdGroupPairs"]])
            for p in group["IpPermissions"]] == [(443, 443, [net["cluster_security_group"]])]
    assert rag_deploy.stack_outputs(SETTINGS) == outputs

    rag_deploy.delete(SETTINGS)

    assert rag_deploy.stack_outputs(SETTINGS) == {}
    assert not [r for r in iam.list_roles()["Roles"] if r["Arn"] == role_arn]  # the agent's role went with it
    assert remaining(teardown.verify_aws(SETTINGS))["CloudFormation"] == ()


# ---------------------------------------------------------------- everything, then teardown


def workshop_resources(net: dict[str, Any], template: Path) -> dict[str, Any]:
    """Create what the eks path leaves in an account: the cluster, its nodes' instances and volumes, a load balancer,
    the OpenSearch stack (and the domain itself, which moto's CloudFormation skips), the ECR repositories."""
    from helpers.infra.aws import cluster as eks_cluster

    ec2, elbv2, iam = client("ec2"), client("elbv2"), client("iam")
    for role in (eks_cluster.AUTO_MODE_CLUSTER_ROLE, eks_cluster.AUTO_MODE_NODE_ROLE):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    assert eks_cluster.missing_roles([eks_cluster.AUTO_MODE_CLUSTER_ROLE, eks_cluster.AUTO_MODE_NODE_ROLE]) == []
    assert eks_cluster.find_private_subnets(ec2) == net["subnet_ids"]
    account = aws.identity().account
    request = eks_cluster.cluster_request(account, net["subnet_ids"], settings=SETTINGS)
    described = eks_cluster.create_cluster(request)  # the cluster_active waiter included
    assert described["status"] == "ACTIVE" and described["tags"] == AWS_TAG
    client("eks").create_nodegroup(clusterName=SETTINGS.cluster_name, nodegroupName="bootstrap",
                                   subnets=net["subnet_ids"], nodeRole=request["computeConfig"]["nodeRoleArn"])
    pool = teardown.workshop_node_pools("auto-mode", SETTINGS)[0]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    node_tags = [{"Key": "eks:kubernetes-node-pool-name", "Value": pool},
                 {"Key": "eks:eks-cluster-name", "Value": SETTINGS.cluster_name}]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g6.12xlarge",
                                 SubnetId=net["subnet_ids"][0],
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": node_tags}]
                                 )["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=100, VolumeType="gp3", TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "kubernetes.io/created-for/pvc/namespace", "Value": "llm-workshop"},
                                            {"Key": "kubernetes.io/created-for/pvc/name", "Value": "model-cache"}]}]
                               )["VolumeId"]
    balancer = elbv2.create_load_balancer(Name="k8s-llmworks-litellm", Subnets=net["subnet_ids"], Scheme="internal",
                                          Type="application", Tags=[
                                              {"Key": "elbv2.k8s.aws/cluster", "Value": SETTINGS.cluster_name},
                                              {"Key": "ingress.k8s.aws/stack", "Value": "llm-workshop/litellm"}]
                                          )["LoadBalancers"][0]["LoadBalancerArn"]
    rag_deploy.deploy(rag_deploy.stack_parameters(**net, settings=SETTINGS), SETTINGS, template=template)
    domain = client("opensearch").create_domain(
        DomainName="test-cluster-knowledge", EngineVersion="OpenSearch_2.19", TagList=TAGS,
        ClusterConfig={"InstanceType": "r7g.large.search", "InstanceCount": 1},
        EBSOptions={"EBSEnabled": True, "VolumeType": "gp3", "VolumeSize": 20},
        VPCOptions={"SubnetIds": net["subnet_ids"][:1], "SecurityGroupIds": [net["cluster_security_group"]]},
    )["DomainStatus"]["DomainName"]
    ecr = client("ecr")
    repositories = teardown.image_repositories()
    for name in repositories:
        ecr.create_repository(repositoryName=name, tags=[{"Key": k, "Value": v} for k, v in AWS_TAG.items()],
                              imageScanningConfiguration={"scanOnPush": True}, imageTagMutability="IMMUTABLE")
        arn = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryArn"]
        assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == TAGS
    return {"instance": instance, "volume": volume, "balancer": balancer, "domain": domain,
            "repositories": repositories}


def strangers(net: dict[str, Any]) -> dict[str, Any]:
    """What belongs to someone else in the same account: teardown must leave all of it, verify must not report it."""
    ec2, elbv2, iam = client("ec2"), client("elbv2"), client("iam")
    role = iam.create_role(RoleName="prod-cluster", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    eks = client("eks")
    eks.create_cluster(name="prod", roleArn=role, resourcesVpcConfig={"subnetIds": net["subnet_ids"]},
                       tags={"team": "payments"})
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m7i.large",
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                     {"Key": "karpenter.sh/nodepool", "Value": "gpu"},
                                     {"Key": "eks:eks-cluster-name", "Value": "prod"}]}])["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "kubernetes.io/created-for/pvc/namespace", "Value": "payments"}]}]
                               )["VolumeId"]
    balancer = elbv2.create_load_balancer(Name="k8s-payments-api", Subnets=net["subnet_ids"], Scheme="internal",
                                          Tags=[{"Key": "elbv2.k8s.aws/cluster", "Value": SETTINGS.cluster_name},
                                                {"Key": "ingress.k8s.aws/stack", "Value": "payments/api"}]
                                          )["LoadBalancers"][0]["LoadBalancerArn"]
    client("cloudformation").create_stack(StackName="network", TemplateBody=json.dumps({
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}))
    client("ecr").create_repository(repositoryName="team/app")
    return {"cluster": "prod", "instance": instance, "volume": volume, "balancer": balancer, "stack": "network",
            "repository": "team/app"}


def controller_cleanup(made: dict[str, Any]) -> None:
    """What the in-cluster controllers do once teardown has deleted the NodePools, PVCs and Ingresses (no Kubernetes
    runs here): Karpenter/Auto Mode terminate the nodes, the EBS CSI driver deletes the volumes, the load balancer
    controller deletes the ALB. Deleting the CloudFormation stack deletes the domain, which moto's stack skipped."""
    client("ec2").terminate_instances(InstanceIds=[made["instance"]])
    client("ec2").delete_volume(VolumeId=made["volume"])
    client("elbv2").delete_load_balancer(LoadBalancerArn=made["balancer"])
    client("opensearch").delete_domain(DomainName=made["domain"])


@pytest.mark.services
def test_verify_reports_everything_tagged_then_nothing_after_teardown(emulator: str, tmp_path: Path) -> None:
    net = network()
    template, _ = emulator_template(tmp_path / "opensearch-domain.json")
    made = workshop_resources(net, template)
    others = strangers(net)

    before = remaining(teardown.verify_aws(SETTINGS))  # no clients given: aws.identity(), then one client a service
    assert before == {
        "EKS": ("test-cluster (ACTIVE, tagged workshop=llm-eks-workshop)",),
        "EC2": (f"{made['instance']} (g6.12xlarge, pool {teardown.workshop_node_pools('auto-mode', SETTINGS)[0]})",),
        "load": ("k8s-llmworks-litellm (llm-workshop/litellm)",),
        "EBS": (f"{made['volume']} (100 GiB, available, pvc model-cache)",),
        "OpenSearch": ("test-cluster-knowledge",),
        "CloudFormation": (f"{STACK} (CREATE_COMPLETE)",),
        "ECR": tuple(made["repositories"]),
    }

    steps = teardown.plan(teardown.aws_entries(SETTINGS))
    dry = teardown.execute_all(steps, dry_run=True, settings=SETTINGS, delete_eks_cluster=True)
    assert f"would delete CloudFormationStack/{STACK} (CREATE_COMPLETE)" in dry
    assert dry[-1].startswith("would delete EKSCluster/test-cluster and its node groups bootstrap (ACTIVE")
    assert remaining(teardown.verify_aws(SETTINGS)) == before  # a dry run changes nothing

    report = teardown.execute_all(steps, dry_run=False, settings=SETTINGS, delete_eks_cluster=True)
    controller_cleanup(made)

    assert f"deleted CloudFormationStack/{STACK}" in report
    assert {f"deleted ECRRepository/{name}" for name in made["repositories"]} <= set(report)
    assert report[-1] == "deleted EKSCluster/test-cluster (node groups bootstrap first)"
    after = teardown.verify_aws(SETTINGS)
    assert after.clean is True, after.rows()
    # and nothing of anyone else's was touched
    assert client("eks").describe_cluster(name=others["cluster"])["cluster"]["status"] == "ACTIVE"
    states = client("ec2").describe_instances(InstanceIds=[others["instance"]])["Reservations"][0]["Instances"]
    assert states[0]["State"]["Name"] == "running"
    assert client("ec2").describe_volumes(VolumeIds=[others["volume"]])["Volumes"]
    assert client("elbv2").describe_load_balancers(LoadBalancerArns=[others["balancer"]])["LoadBalancers"]
    assert client("cloudformation").describe_stacks(StackName=others["stack"])["Stacks"][0]["StackStatus"] \
        == "CREATE_COMPLETE"
    assert client("ecr").describe_repositories(repositoryNames=[others["repository"]])["repositories"]


@pytest.mark.services
def test_cluster_deletion_is_opt_in_and_refuses_an_untagged_cluster(emulator: str) -> None:
    net = network()
    eks, iam = client("eks"), client("iam")
    role = iam.create_role(RoleName="cluster", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    eks.create_cluster(name=SETTINGS.cluster_name, roleArn=role, resourcesVpcConfig={"subnetIds": net["subnet_ids"]})

    # the settings' name, untagged (made by hand, or by someone else): reported, never deleted
    assert remaining(teardown.verify_aws(SETTINGS))["EKS"] == ("test-cluster (ACTIVE, the workshop's name)",)
    refused = teardown.delete_cluster(SETTINGS, confirm=True)
    assert refused.startswith("refused EKSCluster/test-cluster: it lacks the tag {'workshop': 'llm-eks-workshop'}")
    assert "aws eks delete-cluster --name test-cluster" in refused
    assert eks.describe_cluster(name=SETTINGS.cluster_name)["cluster"]["status"] == "ACTIVE"

    eks.tag_resource(resourceArn=eks.describe_cluster(name=SETTINGS.cluster_name)["cluster"]["arn"], tags=AWS_TAG)
    # off by default: only what it would do
    assert teardown.delete_cluster(SETTINGS).startswith("would delete EKSCluster/test-cluster (ACTIVE")
    assert teardown.execute_all(teardown.plan([]), dry_run=False, settings=SETTINGS)[-1].startswith(
        "kept    EKSCluster/test-cluster")
    assert eks.list_clusters()["clusters"] == [SETTINGS.cluster_name]
    assert teardown.delete_cluster(SETTINGS, confirm=True, poll=1) == "deleted EKSCluster/test-cluster"
    assert eks.list_clusters()["clusters"] == []
    assert teardown.delete_cluster(SETTINGS, confirm=True) == "absent  EKSCluster/test-cluster"


@pytest.mark.services
def test_image_checks_read_ecr(emulator: str) -> None:
    from helpers.layers.ray import deploy as ray_deploy

    registry = ray_deploy.ecr_registry(aws.identity().account, REGION)
    assert ray_deploy.image_in_ecr(registry, REGION) is False  # no repository yet
    repository = ray_deploy.parameters()["image"]["repository"]
    client("ecr").create_repository(repositoryName=repository, tags=TAGS)
    assert ray_deploy.image_in_ecr(registry, REGION) is False  # a repository, no image with the tag


# ---------------------------------------------------------------- where moto differs from AWS: botocore's model


def stubbed(service: str) -> tuple[Any, Any]:
    import boto3
    from botocore.stub import Stubber

    c = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return c, Stubber(c)


def test_an_existing_service_linked_role_is_what_aws_answers_it_is() -> None:
    iam, stub = stubbed("iam")
    params = {"AWSServiceName": "opensearchservice.amazonaws.com", "Description": ANY}
    stub.add_client_error("create_service_linked_role", service_error_code="InvalidInput", http_status_code=400,
                          service_message="Service role name AWSServiceRoleForAmazonOpenSearchService has been taken "
                                          "in this account, please try a different suffix.", expected_params=params)
    stub.add_client_error("create_service_linked_role", service_error_code="AccessDenied", http_status_code=403,
                          service_message="not authorized to perform: iam:CreateServiceLinkedRole",
                          expected_params=params)
    with stub:
        assert rag_deploy.ensure_service_linked_role(iam) == "exists"
        with pytest.raises(aws.AwsUnavailable) as info:
            rag_deploy.ensure_service_linked_role(iam)
    assert "create-service-linked-role --aws-service-name opensearchservice.amazonaws.com" in str(info.value.fix)


def test_deploy_creates_the_service_linked_role_before_the_stack() -> None:
    iam, iam_stub = stubbed("iam")
    cfn, cfn_stub = stubbed("cloudformation")
    order: list[str] = []
    iam.meta.events.register("before-parameter-build.iam.*", lambda model, **_: order.append(model.name))
    cfn.meta.events.register("before-parameter-build.cloudformation.*", lambda model, **_: order.append(model.name))
    iam_stub.add_response("create_service_linked_role", {"Role": {
        "Path": "/aws-service-role/opensearchservice.amazonaws.com/", "RoleName": rag_deploy.SERVICE_LINKED_ROLE,
        "RoleId": "AROAEXAMPLE123456789", "Arn": "arn:aws:iam::123456789012:role/aws-service-role/x",
        "CreateDate": "2026-01-01T00:00:00Z"}})
    cfn_stub.add_response("create_stack", {"StackId": "arn:aws:cloudformation:us-west-2:123456789012:stack/x/1"})
    cfn_stub.add_client_error("describe_stacks", service_error_code="ValidationError")  # stack_outputs
    with iam_stub, cfn_stub:
        rag_deploy.deploy(rag_deploy.stack_parameters("vpc-1", ["subnet-1", "subnet-2"], "sg-1", SETTINGS), SETTINGS,
                          cloudformation=cfn, iam=iam, wait=False)
    assert order[:2] == ["CreateServiceLinkedRole", "CreateStack"]


def test_cluster_network_reads_the_clusters_vpc() -> None:
    eks, stub = stubbed("eks")
    stub.add_response("describe_cluster", {"cluster": {"name": "test-cluster", "resourcesVpcConfig": {
        "vpcId": "vpc-1", "subnetIds": ["subnet-1", "subnet-2"], "clusterSecurityGroupId": "sg-1"}}},
        {"name": "test-cluster"})
    with stub:
        assert rag_deploy.cluster_network(SETTINGS, eks) == {
            "vpc_id": "vpc-1", "subnet_ids": ["subnet-1", "subnet-2"], "cluster_security_group": "sg-1"}


def test_cluster_deletion_requests_are_valid_for_botocore() -> None:
    """delete_cluster against botocore's EKS model: node groups, their waiter, the cluster, its waiter."""
    eks, stub = stubbed("eks")
    tagged = {"cluster": {"name": "test-cluster", "status": "ACTIVE", "tags": AWS_TAG}}
    stub.add_response("describe_cluster", tagged, {"name": "test-cluster"})
    stub.add_response("list_nodegroups", {"nodegroups": ["bootstrap"]}, {"clusterName": "test-cluster"})
    stub.add_response("delete_nodegroup", {"nodegroup": {"nodegroupName": "bootstrap", "status": "DELETING"}},
                      {"clusterName": "test-cluster", "nodegroupName": "bootstrap"})
    stub.add_client_error("describe_nodegroup", service_error_code="ResourceNotFoundException",
                          expected_params={"clusterName": "test-cluster", "nodegroupName": "bootstrap"})
    stub.add_response("delete_cluster", {"cluster": {"name": "test-cluster", "status": "DELETING"}},
                      {"name": "test-cluster"})
    stub.add_client_error("describe_cluster", service_error_code="ResourceNotFoundException",
                          expected_params={"name": "test-cluster"})
    with stub:
        assert teardown.delete_cluster(SETTINGS, eks, confirm=True, poll=1) == \
            "deleted EKSCluster/test-cluster (node groups bootstrap first)"
    stub.assert_no_pending_responses()
