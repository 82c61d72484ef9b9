"""AWS account look-ups for the eks target: identity, region, quotas, instance shapes and prices.

Offline, this module only reads the committed price table (`helpers/data/ec2_prices.csv`). Every
function that calls AWS raises AwsUnavailable, with the fix, when there are no credentials or the call
is refused, so a notebook can stop with one clear message instead of a botocore traceback.

    python -m helpers.aws identity
    python -m helpers.aws quotas
    python -m helpers.aws refresh-prices
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from helpers.config import ROOT, Settings

PRICE_TABLE = ROOT / "helpers" / "data" / "ec2_prices.csv"
PRICING_API_REGION = "us-east-1"  # the Price List API answers from us-east-1 (and two other regions) for every region
CREDENTIALS_FIX = (
    "Configure AWS credentials for the account that runs the workshop: `aws configure sso` then "
    "`export AWS_PROFILE=<profile>` (or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), and check with "
    "`python -m helpers.aws identity`. The local target needs no AWS account."
)


class AwsUnavailable(RuntimeError):
    """AWS cannot be used right now (no credentials, expired session, access denied); `fix` says what to do."""

    def __init__(self, message: str, fix: str = CREDENTIALS_FIX) -> None:
        super().__init__(f"{message}\nFix: {fix}")
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class Identity:
    """Who the AWS calls run as."""

    account: str
    arn: str
    user_id: str
    region: str


@dataclass(frozen=True)
class QuotaSpec:
    """A Service Quotas quota the workshop needs, by service and quota code."""

    service_code: str
    quota_code: str
    name: str
    instance_categories: tuple[str, ...]  # instance categories (c, m, g, inf, ...) whose vCPUs count against it


@dataclass(frozen=True)
class Quota:
    """A quota's current value in the account and region."""

    spec: QuotaSpec
    value: float
    unit: str
    source: str  # "applied" (the account's value) or "default" (AWS default; nothing applied yet)


# On-demand vCPU quotas per instance class (Service Quotas, service "ec2").
QUOTAS: dict[str, QuotaSpec] = {
    "standard": QuotaSpec(
        "ec2",
        "L-1216C47A",
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
        ("a", "c", "d", "h", "i", "m", "r", "t", "z"),
    ),
    "gpu": QuotaSpec("ec2", "L-DB2E81BA", "Running On-Demand G and VT instances", ("g", "vt")),
    "inferentia": QuotaSpec("ec2", "L-1945791B", "Running On-Demand Inf instances", ("inf",)),
}


@dataclass(frozen=True)
class InstanceType:
    """One row of the price table: an EC2 instance type's shape and on-demand hourly price."""

    instance_type: str
    family: str
    category: str
    generation: int
    size: str
    arch: str
    vcpu: int
    memory_gib: float
    gpu_count: int
    gpu_manufacturer: str
    gpu_name: str
    gpu_memory_gib: float
    neuron_devices: int
    accelerator_memory_gib: float
    price_usd_per_hour: Decimal
    price_source: str


# ---------------------------------------------------------------- the committed price table


def load_instance_types(path: Path | str = PRICE_TABLE) -> dict[str, InstanceType]:
    """The price table as InstanceType rows keyed by instance type (reads the committed CSV; no AWS call)."""
    text = Path(path).read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    types = {f.name: f.type for f in fields(InstanceType)}
    result: dict[str, InstanceType] = {}
    for row in rows:
        values: dict[str, Any] = {}
        for name, raw in row.items():
            kind = types[name]
            if kind in ("int", int):
                values[name] = int(raw or 0)
            elif kind in ("float", float):
                values[name] = float(raw or 0)
            elif kind in ("Decimal", Decimal):
                values[name] = Decimal(raw)
            else:
                values[name] = raw or ""
        result[row["instance_type"]] = InstanceType(**values)
    return result


def price_table_header(path: Path | str = PRICE_TABLE) -> str:
    """The comment header of the price table: its source, region and date."""
    return "\n".join(line[2:] for line in Path(path).read_text().splitlines() if line.startswith("#"))


def save_instance_types(rows: Iterable[InstanceType], header: str, path: Path | str = PRICE_TABLE) -> Path:
    """Write the price table (header lines become # comments) and return its path."""
    out = io.StringIO()
    for line in header.splitlines():
        out.write(f"# {line}\n")
    names = [f.name for f in fields(InstanceType)]
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = asdict(row)
        values["price_usd_per_hour"] = format(row.price_usd_per_hour.normalize(), "f")
        writer.writerow(values)
    Path(path).write_text(out.getvalue())
    return Path(path)


def quota_for_category(category: str) -> QuotaSpec | None:
    """The on-demand vCPU quota an instance category counts against (None when the workshop does not track it)."""
    return next((spec for spec in QUOTAS.values() if category in spec.instance_categories), None)


# ---------------------------------------------------------------- AWS calls


def region(settings: Settings | None = None) -> str:
    """The AWS region the workshop uses (settings.aws_region, WORKSHOP_AWS_REGION)."""
    return (settings or Settings()).aws_region


def session(region_name: str | None = None) -> Any:
    """A boto3 session for the workshop's region."""
    import boto3

    return boto3.Session(region_name=region_name or region())


def client(service: str, region_name: str | None = None) -> Any:
    """A boto3 client for one service in the workshop's region."""
    return session(region_name).client(service)


def _unavailable(error: Exception, action: str) -> AwsUnavailable:
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, TokenRetrievalError

    if isinstance(error, NoCredentialsError):
        return AwsUnavailable(f"No AWS credentials found, so the workshop cannot {action}.")
    if isinstance(error, TokenRetrievalError):
        return AwsUnavailable(
            f"The AWS SSO session has expired, so the workshop cannot {action}.",
            "Run `aws sso login` (with the same AWS_PROFILE) and retry.",
        )
    if isinstance(error, NoRegionError):
        return AwsUnavailable(
            f"No AWS region is set, so the workshop cannot {action}.",
            "Set WORKSHOP_AWS_REGION (default us-west-2) or AWS_REGION.",
        )
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException"):
            return AwsUnavailable(f"AWS rejected the credentials ({code}), so the workshop cannot {action}.")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return AwsUnavailable(
                f"AWS denied access to {action} ({code}: {message}).",
                "Grant the workshop's IAM principal this read-only action, or skip this step.",
            )
        return AwsUnavailable(f"AWS answered {code} when asked to {action}: {message}", "Read the message above.")
    return AwsUnavailable(f"Could not reach AWS to {action}: {error}", "Check the network and the region.")


def _call(action: str, fn: Any, **params: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**params)
    except (BotoCoreError, ClientError) as error:
        raise _unavailable(error, action) from error


def identity(sts: Any = None) -> Identity:
    """Who the AWS credentials belong to (sts:GetCallerIdentity); raises AwsUnavailable without credentials."""
    sts = sts or client("sts")
    answer = _call("identify the caller", sts.get_caller_identity)
    return Identity(account=answer["Account"], arn=answer["Arn"], user_id=answer["UserId"], region=sts.meta.region_name)


def quota(spec: QuotaSpec, quotas_client: Any = None) -> Quota:
    """The account's value of one quota; falls back to the AWS default when none was applied."""
    from botocore.exceptions import BotoCoreError, ClientError

    sq = quotas_client or client("service-quotas")
    try:
        answer = sq.get_service_quota(ServiceCode=spec.service_code, QuotaCode=spec.quota_code)
        source = "applied"
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchResourceException":
            raise _unavailable(error, f"read quota {spec.quota_code}") from error
        answer = _call(
            f"read the default of quota {spec.quota_code}",
            sq.get_aws_default_service_quota,
            ServiceCode=spec.service_code,
            QuotaCode=spec.quota_code,
        )
        source = "default"
    except BotoCoreError as error:  # no credentials, no endpoint
        raise _unavailable(error, f"read quota {spec.quota_code}") from error
    q = answer["Quota"]
    return Quota(spec=spec, value=float(q.get("Value", 0)), unit=str(q.get("Unit", "None")), source=source)


def quotas(quotas_client: Any = None) -> dict[str, Quota]:
    """The workshop's on-demand vCPU quotas (standard, G and VT, Inf) in the workshop's region."""
    sq = quotas_client or client("service-quotas")
    return {name: quota(spec, sq) for name, spec in QUOTAS.items()}


def quota_shortfalls(vcpus_needed: dict[str, int], current: dict[str, Quota]) -> list[str]:
    """Plain-language lines for every quota that is below the vCPUs a plan needs (empty when all fit)."""
    lines = []
    for name, needed in vcpus_needed.items():
        q = current.get(name)
        if q is not None and needed > q.value:
            lines.append(
                f"{q.spec.name} ({q.spec.quota_code}): the plan needs {needed} vCPUs, the quota is {q.value:g}. "
                f"Request an increase in the Service Quotas console (region {region()}) before applying."
            )
    return lines


def _architecture(info: dict[str, Any]) -> str:
    archs = info.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    return "arm64" if "arm64" in archs else "amd64"


def _instance_shape(info: dict[str, Any]) -> dict[str, Any]:
    name = info["InstanceType"]
    family, _, size = name.partition(".")
    match = re.match(r"^([a-z]+?)(\d+)", family)
    category, generation = (match.group(1), int(match.group(2))) if match else (family, 0)
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    gpu = gpus[0] if gpus else {}
    neuron = sum(d.get("Count", 0) for d in info.get("NeuronInfo", {}).get("NeuronDevices", []))
    neuron_mib = info.get("NeuronInfo", {}).get("TotalNeuronDeviceMemoryInMiB", 0)
    gpu_count = sum(g.get("Count", 0) for g in gpus)
    gpu_mib = gpu.get("MemoryInfo", {}).get("SizeInMiB", 0)
    return {
        "instance_type": name,
        "family": family,
        "category": category,
        "generation": generation,
        "size": size,
        "arch": _architecture(info),
        "vcpu": info["VCpuInfo"]["DefaultVCpus"],
        "memory_gib": info["MemoryInfo"]["SizeInMiB"] / 1024,
        "gpu_count": gpu_count,
        "gpu_manufacturer": str(gpu.get("Manufacturer", "")).lower(),
        "gpu_name": str(gpu.get("Name", "")).lower(),
        "gpu_memory_gib": gpu_mib / 1024,
        "neuron_devices": neuron,
        "accelerator_memory_gib": (neuron_mib / 1024) if neuron else gpu_count * gpu_mib / 1024,
    }


def describe_instance_types(names: Iterable[str], ec2: Any = None) -> dict[str, dict[str, Any]]:
    """Instance shapes from ec2:DescribeInstanceTypes (vCPUs, memory, GPUs, Neuron devices, architecture)."""
    ec2 = ec2 or client("ec2")
    names = sorted(set(names))
    shapes: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), 100):  # the API takes at most 100 names per request
        token = None
        while True:
            params: dict[str, Any] = {"InstanceTypes": names[start : start + 100]}
            if token:
                params["NextToken"] = token
            answer = _call("describe instance types", ec2.describe_instance_types, **params)
            for info in answer.get("InstanceTypes", []):
                shapes[info["InstanceType"]] = _instance_shape(info)
            token = answer.get("NextToken")
            if not token:
                break
    return shapes


def _on_demand_usd(price_item: str) -> Decimal | None:
    product = json.loads(price_item)
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if usd is not None and dimension.get("unit") in ("Hrs", "Hours"):
                return Decimal(usd)
    return None


def pricing_filters(instance_type: str, region_code: str) -> list[dict[str, str]]:
    """Price List filters that single out one instance type's on-demand Linux price in one region."""
    return [
        {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region_code},
        {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
        {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
        {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
        {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
        {"Type": "TERM_MATCH", "Field": "licenseModel", "Value": "No License required"},
    ]


def on_demand_prices(names: Iterable[str], region_code: str | None = None, pricing: Any = None) -> dict[str, Decimal]:
    """On-demand Linux hourly USD prices from the AWS Price List API (pricing:GetProducts), by instance type."""
    pricing = pricing or client("pricing", PRICING_API_REGION)
    region_code = region_code or region()
    prices: dict[str, Decimal] = {}
    for name in sorted(set(names)):
        token = None
        while True:
            params: dict[str, Any] = {
                "ServiceCode": "AmazonEC2",
                "Filters": pricing_filters(name, region_code),
                "FormatVersion": "aws_v1",
                "MaxResults": 100,
            }
            if token:
                params["NextToken"] = token
            answer = _call(f"read the price of {name}", pricing.get_products, **params)
            for item in answer.get("PriceList", []):
                usd = _on_demand_usd(item)
                if usd is not None and usd > 0:
                    prices[name] = usd
            token = answer.get("NextToken")
            if not token or name in prices:
                break
    return prices


def refresh_price_table(
    names: Iterable[str] | None = None,
    path: Path | str = PRICE_TABLE,
    settings: Settings | None = None,
    ec2: Any = None,
    pricing: Any = None,
) -> Path:
    """Rewrite the price table from EC2 and the Price List API for the workshop's region (eks target only)."""
    settings = settings or Settings()
    if settings.target != "eks":
        raise AwsUnavailable(
            "The price table is refreshed only for the eks target.",
            "Set WORKSHOP_TARGET=eks (and AWS credentials); the local target uses the committed table.",
        )
    current = load_instance_types(path) if Path(path).exists() else {}
    names = sorted(set(names or current))
    shapes = describe_instance_types(names, ec2)
    prices = on_demand_prices(names, settings.aws_region, pricing)
    today = dt.date.today().isoformat()
    rows = []
    for name in names:
        if name not in shapes or name not in prices:
            continue  # not offered in this region
        rows.append(
            InstanceType(
                **shapes[name],
                price_usd_per_hour=prices[name],
                price_source=f"pricing-api-{settings.aws_region}-{today}",
            )
        )
    header = (
        "Amazon EC2 instance shapes and on-demand prices for the instance types the workshop's node pools can pick.\n"
        f"region: {settings.aws_region} | prices: USD per hour, on-demand, Linux, shared tenancy, "
        "no pre-installed software\n"
        f"source: ec2:DescribeInstanceTypes and pricing:GetProducts (AWS Price List API), refreshed {today}\n"
        "  by `python -m helpers.aws refresh-prices`.\n"
        "Auto Mode adds a management fee per instance that is not in this table."
    )
    return save_instance_types(rows, header, path)


def recommended_al2023_alias(kubernetes_version: str, arch: str = "x86_64", ssm: Any = None) -> str:
    """The al2023@vYYYYMMDD alias of the EKS-recommended AL2023 AMI release (SSM public parameter)."""
    ssm = ssm or client("ssm")
    name = (
        f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/{arch}"
        "/standard/recommended/release_version"
    )
    answer = _call("read the recommended AL2023 AMI release", ssm.get_parameter, Name=name)
    release = answer["Parameter"]["Value"]  # e.g. 1.36.0-20260828
    return f"al2023@v{release.rsplit('-', 1)[-1]}"


def auto_mode_node_role(cluster_name: str | None = None, eks: Any = None) -> str:
    """The IAM role name the cluster's Auto Mode nodes use (eks:DescribeCluster computeConfig.nodeRoleArn)."""
    eks = eks or client("eks")
    cluster_name = cluster_name or Settings().cluster_name
    answer = _call(f"describe cluster {cluster_name}", eks.describe_cluster, name=cluster_name)
    arn = (answer["cluster"].get("computeConfig") or {}).get("nodeRoleArn")
    if not arn:
        raise AwsUnavailable(
            f"Cluster {cluster_name} has no Auto Mode node role (is Auto Mode enabled?).",
            "Use the karpenter flavour, or enable Auto Mode on the cluster.",
        )
    return arn.rsplit("/", 1)[-1]


# ---------------------------------------------------------------- the EKS Auto Mode cluster

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
        from helpers.manifests import KUBERNETES_VERSION as kubernetes_version
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
    answer = _call("list the private subnets", ec2.describe_subnets, Filters=filters)
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
                raise _unavailable(error, f"read IAM role {name}") from error
            missing.append(name)
        except BotoCoreError as error:
            raise _unavailable(error, f"read IAM role {name}") from error
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
            raise _unavailable(error, f"create cluster {request['name']}") from error
    if wait:
        delay = 30
        waiter = eks.get_waiter("cluster_active")
        _call(
            f"wait for cluster {request['name']}",
            waiter.wait,
            name=request["name"],
            WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(timeout // delay))},
        )
    return _call(f"describe cluster {request['name']}", eks.describe_cluster, name=request["name"])["cluster"]


def main(argv: list[str] | None = None) -> int:
    """Command line: identity, quotas, refresh-prices."""
    parser = argparse.ArgumentParser(prog="python -m helpers.aws", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("identity", "quotas", "refresh-prices"))
    args = parser.parse_args(argv)
    try:
        if args.command == "identity":
            print(identity())
        elif args.command == "quotas":
            for name, q in quotas().items():
                print(f"{name}: {q.spec.name} ({q.spec.quota_code}) = {q.value:g} {q.unit} [{q.source}]")
        else:
            print(f"wrote {refresh_price_table()}")
    except AwsUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
