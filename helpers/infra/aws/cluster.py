"""The EKS Auto Mode cluster of chapter 01: its prerequisites (roles, private subnets), the create request, the AMI alias."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from helpers.config import Settings
from helpers.infra.aws.account import AwsUnavailable, call, client, unavailable


def recommended_al2023_alias(kubernetes_version: str, arch: str = "x86_64", ssm: Any = None) -> str:
    """The al2023@vYYYYMMDD alias of the EKS-recommended AL2023 AMI release (SSM public parameter)."""
    ssm = ssm or client("ssm")
    name = (
        f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/{arch}"
        "/standard/recommended/release_version"
    )
    answer = call("read the recommended AL2023 AMI release", ssm.get_parameter, Name=name)
    release = answer["Parameter"]["Value"]  # e.g. 1.36.0-20260828
    return f"al2023@v{release.rsplit('-', 1)[-1]}"


def auto_mode_node_role(cluster_name: str | None = None, eks: Any = None) -> str:
    """The IAM role name the cluster's Auto Mode nodes use (eks:DescribeCluster computeConfig.nodeRoleArn)."""
    eks = eks or client("eks")
    cluster_name = cluster_name or Settings().cluster_name
    answer = call(f"describe cluster {cluster_name}", eks.describe_cluster, name=cluster_name)
    arn = (answer["cluster"].get("computeConfig") or {}).get("nodeRoleArn")
    if not arn:
        raise AwsUnavailable(
            f"Cluster {cluster_name} has no Auto Mode node role (is Auto Mode enabled?).",
            "Use the karpenter flavour, or enable Auto Mode on the cluster.",
        )
    return arn.rsplit("/", 1)[-1]


# The IAM roles the EKS console's "Quick configuration (with EKS Auto Mode)" creates, by these names.
AUTO_MODE_CLUSTER_ROLE = "AmazonEKSAutoClusterRole"


AUTO_MODE_NODE_ROLE = "AmazonEKSAutoNodeRole"


AUTO_MODE_CLUSTER_POLICIES = (
    "AmazonEKSClusterPolicy",
    "AmazonEKSComputePolicy",
    "AmazonEKSBlockStoragePolicy",
    "AmazonEKSLoadBalancingPolicy",
    "AmazonEKSNetworkingPolicy",
)


AUTO_MODE_NODE_POLICIES = ("AmazonEKSWorkerNodeMinimalPolicy", "AmazonEC2ContainerRegistryPullOnly")


PRIVATE_SUBNET_TAG = "kubernetes.io/role/internal-elb"  # the tag EKS VPC templates put on private subnets


CLUSTER_PREREQUISITES = (
    f"IAM role {AUTO_MODE_CLUSTER_ROLE} (trusted by eks.amazonaws.com for sts:AssumeRole and sts:TagSession; "
    f"policies {', '.join(AUTO_MODE_CLUSTER_POLICIES)})",
    f"IAM role {AUTO_MODE_NODE_ROLE} (trusted by ec2.amazonaws.com; policies {', '.join(AUTO_MODE_NODE_POLICIES)})",
    f"private subnets in at least two availability zones, tagged {PRIVATE_SUBNET_TAG}=1, with a NAT gateway "
    "(the EKS VPC CloudFormation template amazon-eks-vpc-private-subnets.yaml makes them)",
)


def cluster_request(
    account_id: str,
    subnet_ids: Iterable[str],
    kubernetes_version: str | None = None,
    settings: Settings | None = None,
    cluster_role: str = AUTO_MODE_CLUSTER_ROLE,
    node_role: str = AUTO_MODE_NODE_ROLE,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The eks:CreateCluster request for the workshop's EKS Auto Mode cluster (pass it to create_cluster)."""
    settings = settings or Settings()
    if kubernetes_version is None:
        from helpers.infra.manifests import KUBERNETES_VERSION as kubernetes_version
    return {
        "name": settings.cluster_name,
        "version": kubernetes_version,
        "roleArn": f"arn:aws:iam::{account_id}:role/{cluster_role}",
        "resourcesVpcConfig": {
            "subnetIds": list(subnet_ids),
            "endpointPublicAccess": True,
            "endpointPrivateAccess": True,
        },
        "accessConfig": {"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": True},
        "bootstrapSelfManagedAddons": False,
        "computeConfig": {
            "enabled": True,
            "nodePools": ["system"],
            "nodeRoleArn": f"arn:aws:iam::{account_id}:role/{node_role}",
        },
        "kubernetesNetworkConfig": {"elasticLoadBalancing": {"enabled": True}},
        "storageConfig": {"blockStorage": {"enabled": True}},
        "upgradePolicy": {"supportType": "STANDARD"},
        "tags": dict(tags if tags is not None else {"workshop": "llm-eks-workshop"}),
    }


def find_private_subnets(ec2: Any = None, vpc_id: str | None = None) -> list[str]:
    """Subnet ids tagged as private for Kubernetes (one VPC); raises AwsUnavailable unless two zones are covered."""
    ec2 = ec2 or client("ec2")
    filters = [{"Name": f"tag:{PRIVATE_SUBNET_TAG}", "Values": ["1"]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    answer = call("list the private subnets", ec2.describe_subnets, Filters=filters)
    subnets = sorted(answer.get("Subnets", []), key=lambda s: (s["VpcId"], s["AvailabilityZone"], s["SubnetId"]))
    vpcs = sorted({s["VpcId"] for s in subnets})
    if len(vpcs) > 1:
        raise AwsUnavailable(
            f"Private subnets were found in several VPCs ({', '.join(vpcs)}).",
            "Pass vpc_id= to choose the VPC the cluster should use.",
        )
    if len({s["AvailabilityZone"] for s in subnets}) < 2:
        raise AwsUnavailable(
            f"No private subnets tagged {PRIVATE_SUBNET_TAG}=1 in two availability zones.",
            "Create a VPC with private subnets in two or more zones, e.g. from the EKS VPC CloudFormation "
            "template amazon-eks-vpc-private-subnets.yaml, which tags them this way.",
        )
    return [s["SubnetId"] for s in subnets]


def missing_roles(names: Iterable[str], iam: Any = None) -> list[str]:
    """The IAM roles among `names` that do not exist in the account (iam:GetRole)."""
    from botocore.exceptions import BotoCoreError, ClientError

    iam = iam or client("iam")
    missing = []
    for name in names:
        try:
            iam.get_role(RoleName=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchEntity":
                raise unavailable(error, f"read IAM role {name}") from error
            missing.append(name)
        except BotoCoreError as error:
            raise unavailable(error, f"read IAM role {name}") from error
    return missing


def create_cluster(
    request: dict[str, Any], eks: Any = None, wait: bool = True, timeout: float = 1800
) -> dict[str, Any]:
    """Create the cluster (eks:CreateCluster) unless it exists, wait until it is ACTIVE, and return its description."""
    from botocore.exceptions import ClientError

    eks = eks or client("eks")
    try:
        eks.create_cluster(**request)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise unavailable(error, f"create cluster {request['name']}") from error
    if wait:
        delay = 30
        waiter = eks.get_waiter("cluster_active")
        call(
            f"wait for cluster {request['name']}",
            waiter.wait,
            name=request["name"],
            WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(timeout // delay))},
        )
    return call(f"describe cluster {request['name']}", eks.describe_cluster, name=request["name"])["cluster"]
