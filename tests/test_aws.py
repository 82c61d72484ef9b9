"""helpers.infra.aws against botocore's own service models: every request is validated by botocore (Stubber),
and every canned response must match the service's output shape. No network, no credentials needed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from helpers.infra import aws
from helpers.config import Settings
from helpers.target import Target

FAKE = {"region_name": "us-west-2", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def stubbed(service: str, region: str = "us-west-2") -> tuple[Any, Stubber]:
    client = boto3.client(service, **{**FAKE, "region_name": region})
    return client, Stubber(client)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """An environment with no AWS credentials anywhere (and no instance metadata look-up)."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def test_identity(no_credentials: None) -> None:
    sts, stub = stubbed("sts")
    stub.add_response(
        "get_caller_identity",
        {"UserId": "AIDAEXAMPLE", "Account": "111122223333", "Arn": "arn:aws:iam::111122223333:user/learner"},
        {},
    )
    with stub:
        who = aws.identity(sts)
    stub.assert_no_pending_responses()
    assert who == aws.Identity("111122223333", "arn:aws:iam::111122223333:user/learner", "AIDAEXAMPLE", "us-west-2")


def test_missing_credentials_raise_a_clear_error_with_the_fix(no_credentials: None) -> None:
    sts = boto3.client("sts", region_name="us-west-2")
    with pytest.raises(aws.AwsUnavailable) as caught:
        aws.identity(sts)
    assert "No AWS credentials" in caught.value.message
    assert "aws configure sso" in caught.value.fix and "Fix:" in str(caught.value)


def test_expired_or_denied_credentials_are_explained() -> None:
    sts, stub = stubbed("sts")
    stub.add_client_error("get_caller_identity", service_error_code="ExpiredToken", service_message="expired")
    with stub, pytest.raises(aws.AwsUnavailable) as caught:
        aws.identity(sts)
    assert "rejected the credentials" in caught.value.message
    sq, stub = stubbed("service-quotas")
    stub.add_client_error(
        "get_service_quota",
        service_error_code="AccessDeniedException",
        service_message="no",
        expected_params={"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"},
    )
    with stub, pytest.raises(aws.AwsUnavailable) as caught:
        aws.quota(aws.QUOTAS["gpu"], sq)
    assert "denied" in caught.value.message


def _quota_answer(spec: aws.QuotaSpec, value: float) -> dict[str, Any]:
    return {
        "Quota": {
            "ServiceCode": spec.service_code,
            "QuotaCode": spec.quota_code,
            "QuotaName": spec.name,
            "Value": value,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
        }
    }


def test_quotas_fall_back_to_the_aws_default() -> None:
    sq, stub = stubbed("service-quotas")
    for name, spec in aws.QUOTAS.items():
        params = {"ServiceCode": "ec2", "QuotaCode": spec.quota_code}
        if name == "inferentia":
            stub.add_client_error(
                "get_service_quota",
                service_error_code="NoSuchResourceException",
                service_message="not applied",
                expected_params=params,
            )
            stub.add_response("get_aws_default_service_quota", _quota_answer(spec, 0.0), params)
        else:
            stub.add_response("get_service_quota", _quota_answer(spec, 64.0 if name == "gpu" else 640.0), params)
    with stub:
        current = aws.quotas(sq)
    stub.assert_no_pending_responses()
    assert current["gpu"].value == 64.0 and current["gpu"].source == "applied"
    assert current["inferentia"].source == "default"
    shortfalls = aws.quota_shortfalls({"gpu": 96, "standard": 34, "inferentia": 0}, current)
    assert len(shortfalls) == 1 and "L-DB2E81BA" in shortfalls[0] and "96" in shortfalls[0]


def _instance_info(name: str, vcpu: int, mib: int, arch: str, gpus: int = 0, neuron: int = 0) -> dict[str, Any]:
    info: dict[str, Any] = {
        "InstanceType": name,
        "VCpuInfo": {"DefaultVCpus": vcpu},
        "MemoryInfo": {"SizeInMiB": mib},
        "ProcessorInfo": {"SupportedArchitectures": [arch]},
    }
    if gpus:
        info["GpuInfo"] = {
            "Gpus": [{"Name": "L4", "Manufacturer": "NVIDIA", "Count": gpus, "MemoryInfo": {"SizeInMiB": 22888}}],
            "TotalGpuMemoryInMiB": 22888 * gpus,
        }
    if neuron:
        info["NeuronInfo"] = {
            "NeuronDevices": [{"Count": neuron, "Name": "Inferentia2", "MemoryInfo": {"SizeInMiB": 32768}}],
            "TotalNeuronDeviceMemoryInMiB": 32768 * neuron,
        }
    return info


def test_describe_instance_types_reads_shapes_in_chunks_of_100() -> None:
    ec2, stub = stubbed("ec2")
    names = [f"m7g.size{i}" for i in range(150)]
    first, second = sorted(names)[:100], sorted(names)[100:]
    stub.add_response("describe_instance_types", {"InstanceTypes": [], "NextToken": "t1"}, {"InstanceTypes": first})
    stub.add_response(
        "describe_instance_types",
        {"InstanceTypes": [_instance_info("g6.12xlarge", 48, 196608, "x86_64", gpus=4)]},
        {"InstanceTypes": first, "NextToken": "t1"},
    )
    stub.add_response(
        "describe_instance_types",
        {
            "InstanceTypes": [
                _instance_info("inf2.xlarge", 4, 16384, "x86_64", neuron=1),
                _instance_info("c7g.large", 2, 4096, "arm64"),
            ]
        },
        {"InstanceTypes": second},
    )
    with stub:
        shapes = aws.describe_instance_types(names, ec2)
    stub.assert_no_pending_responses()
    assert shapes["g6.12xlarge"]["gpu_count"] == 4 and shapes["g6.12xlarge"]["gpu_name"] == "l4"
    assert shapes["g6.12xlarge"]["memory_gib"] == 192 and shapes["g6.12xlarge"]["arch"] == "amd64"
    assert shapes["inf2.xlarge"]["neuron_devices"] == 1 and shapes["inf2.xlarge"]["accelerator_memory_gib"] == 32
    assert shapes["c7g.large"]["arch"] == "arm64" and shapes["c7g.large"]["generation"] == 7


def _price_item(instance_type: str, usd: str) -> str:
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {"instanceType": instance_type, "regionCode": "us-west-2"},
            },
            "terms": {
                "OnDemand": {
                    "ABC.JRTCKXETXF": {
                        "priceDimensions": {
                            "ABC.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "pricePerUnit": {"USD": usd},
                                "description": f"${usd} per On Demand Linux {instance_type}",
                            }
                        }
                    }
                }
            },
        }
    )


def test_on_demand_prices_use_the_price_list_api() -> None:
    pricing, stub = stubbed("pricing", aws.PRICING_API_REGION)
    for name, usd in (("c7g.large", "0.0725000000"), ("g6.12xlarge", "4.6016000000")):
        stub.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [_price_item(name, usd)]},
            {
                "ServiceCode": "AmazonEC2",
                "Filters": aws.pricing_filters(name, "us-west-2"),
                "FormatVersion": "aws_v1",
                "MaxResults": 100,
            },
        )
    with stub:
        prices = aws.on_demand_prices(["g6.12xlarge", "c7g.large"], "us-west-2", pricing)
    stub.assert_no_pending_responses()
    assert prices == {"c7g.large": Decimal("0.0725"), "g6.12xlarge": Decimal("4.6016")}


def test_refresh_price_table_rewrites_the_csv_for_the_eks_target(tmp_path: Path) -> None:
    ec2, ec2_stub = stubbed("ec2")
    pricing, pricing_stub = stubbed("pricing", aws.PRICING_API_REGION)
    ec2_stub.add_response(
        "describe_instance_types",
        {
            "InstanceTypes": [
                _instance_info("c7g.large", 2, 4096, "arm64"),
                _instance_info("g6.12xlarge", 48, 196608, "x86_64", gpus=4),
            ]
        },
        {"InstanceTypes": ["c7g.large", "g6.12xlarge"]},
    )
    for name, usd in (("c7g.large", "0.0725"), ("g6.12xlarge", "4.6016")):
        pricing_stub.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [_price_item(name, usd)]},
            {"ServiceCode": "AmazonEC2", "Filters": ANY, "FormatVersion": "aws_v1", "MaxResults": 100},
        )
    csv = tmp_path / "prices.csv"
    eks = Target("eks", Settings(_env_file=None, target="local", aws_region="us-west-2"))
    with ec2_stub, pricing_stub:
        aws.refresh_price_table(eks, ["c7g.large", "g6.12xlarge"], csv, ec2=ec2, pricing=pricing)
    table = aws.load_instance_types(csv)
    assert table["g6.12xlarge"].price_usd_per_hour == Decimal("4.6016") and table["g6.12xlarge"].gpu_count == 4
    assert table["c7g.large"].price_source.startswith("pricing-api-us-west-2-")
    assert "refreshed" in aws.price_table_header(csv)


def test_refresh_is_refused_for_the_local_target(tmp_path: Path) -> None:
    """The Target decides, not WORKSHOP_TARGET: settings that say eks do not make a local target refresh."""
    local = Target("local", Settings(_env_file=None, target="eks"))
    with pytest.raises(aws.AwsUnavailable, match="only for the eks target") as raised:
        aws.refresh_price_table(local, ["c7g.large"], tmp_path / "p.csv")
    assert "TARGET" in raised.value.fix
    assert not (tmp_path / "p.csv").exists()


def test_recommended_al2023_alias_reads_ssm() -> None:
    ssm, stub = stubbed("ssm")
    name = "/aws/service/eks/optimized-ami/1.36/amazon-linux-2023/x86_64/standard/recommended/release_version"
    stub.add_response(
        "get_parameter",
        {"Parameter": {"Name": name, "Type": "String", "Value": "1.36.0-20260828", "Version": 3}},
        {"Name": name},
    )
    with stub:
        assert aws.recommended_al2023_alias("1.36", ssm=ssm) == "al2023@v20260828"


def test_auto_mode_node_role_reads_the_cluster() -> None:
    eks, stub = stubbed("eks")
    stub.add_response(
        "describe_cluster",
        {
            "cluster": {
                "name": "test-cluster",
                "computeConfig": {
                    "enabled": True,
                    "nodePools": ["system"],
                    "nodeRoleArn": "arn:aws:iam::111122223333:role/AmazonEKSAutoNodeRole",
                },
            }
        },
        {"name": "test-cluster"},
    )
    with stub:
        assert aws.auto_mode_node_role("test-cluster", eks) == "AmazonEKSAutoNodeRole"


def test_botocore_rejects_a_malformed_request() -> None:
    """The Stubber-backed tests are meaningful: botocore validates parameters against the service model."""
    from botocore.exceptions import ParamValidationError

    pricing, stub = stubbed("pricing", aws.PRICING_API_REGION)
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": []})
    with stub, pytest.raises(ParamValidationError):
        pricing.get_products(ServiceCode="AmazonEC2", Filters=[{"Type": "TERM_MATCH", "Value": "y"}])  # no Field


def test_price_filters_use_types_the_service_model_defines() -> None:
    """botocore's validator checks types and required members but not enums: check those against the model too."""
    model = boto3.client("pricing", **{**FAKE, "region_name": aws.PRICING_API_REGION}).meta.service_model
    allowed = set(model.shape_for("FilterType").enum)
    assert {f["Type"] for f in aws.pricing_filters("g6.12xlarge", "us-west-2")} <= allowed


# ---------------------------------------------------------------- the committed table


def test_committed_price_table_is_complete_and_dated() -> None:
    table = aws.load_instance_types()
    header = aws.price_table_header()
    assert "us-west-2" in header and "source" in header and "compiled: 2026" in header
    assert all(t.price_usd_per_hour > 0 and t.vcpu > 0 and t.memory_gib > 0 for t in table.values())
    assert {t.family for t in table.values()} >= {"g5", "g6", "inf2", "c7g", "m7g", "r7g", "m7i"}
    assert all(
        t.gpu_count in (1, 4, 8) and t.gpu_manufacturer == "nvidia" for t in table.values() if t.family in ("g5", "g6")
    )
    assert all(t.neuron_devices > 0 for t in table.values() if t.family == "inf2")


def test_quota_classes() -> None:
    assert aws.quota_for_category("g") == aws.QUOTAS["gpu"]
    assert aws.quota_for_category("inf") == aws.QUOTAS["inferentia"]
    assert aws.quota_for_category("m") == aws.QUOTAS["standard"]


# ---------------------------------------------------------------- the EKS Auto Mode cluster


def test_cluster_request_is_a_valid_auto_mode_create_cluster_call() -> None:
    """The request the notebook shows is accepted by botocore's CreateCluster model, and is Auto Mode."""
    settings = Settings(_env_file=None, cluster_name="test-cluster")
    request = aws.cluster_request("111122223333", ["subnet-a", "subnet-b"], "1.36", settings)
    assert request["computeConfig"]["enabled"] and request["storageConfig"]["blockStorage"]["enabled"]
    assert request["kubernetesNetworkConfig"]["elasticLoadBalancing"]["enabled"], "Auto Mode needs all three on"
    assert request["computeConfig"]["nodeRoleArn"].endswith(":role/AmazonEKSAutoNodeRole")
    assert request["accessConfig"]["authenticationMode"] == "API"
    assert request["tags"] == {"workshop": "llm-eks-workshop"}
    eks, stub = stubbed("eks")
    creating = {"cluster": {"name": "test-cluster", "status": "CREATING"}}
    active = {"cluster": {"name": "test-cluster", "status": "ACTIVE"}}
    stub.add_response("create_cluster", creating, request)
    stub.add_response("describe_cluster", active, {"name": "test-cluster"})  # the cluster_active waiter's poll
    stub.add_response("describe_cluster", active, {"name": "test-cluster"})
    with stub:
        described = aws.create_cluster(request, eks)
    stub.assert_no_pending_responses()
    assert described["status"] == "ACTIVE"


def test_cluster_request_defaults_to_the_validated_kubernetes_version() -> None:
    from helpers.infra.manifests import KUBERNETES_VERSION

    assert aws.cluster_request("111122223333", ["subnet-a", "subnet-b"])["version"] == KUBERNETES_VERSION


def test_create_cluster_reuses_an_existing_cluster() -> None:
    request = aws.cluster_request("111122223333", ["subnet-a", "subnet-b"], "1.36", Settings(_env_file=None))
    eks, stub = stubbed("eks")
    stub.add_client_error("create_cluster", service_error_code="ResourceInUseException", expected_params=request)
    active = {"cluster": {"name": request["name"], "status": "ACTIVE"}}
    stub.add_response("describe_cluster", active, {"name": request["name"]})
    with stub:
        assert aws.create_cluster(request, eks, wait=False)["status"] == "ACTIVE"


def test_create_cluster_explains_a_refusal() -> None:
    request = aws.cluster_request("111122223333", ["subnet-a", "subnet-b"], "1.36", Settings(_env_file=None))
    eks, stub = stubbed("eks")
    stub.add_client_error(
        "create_cluster", service_error_code="AccessDeniedException", service_message="no", expected_params=request
    )
    with stub, pytest.raises(aws.AwsUnavailable) as caught:
        aws.create_cluster(request, eks, wait=False)
    assert "AccessDeniedException" in caught.value.message


def test_find_private_subnets_needs_two_zones() -> None:
    ec2, stub = stubbed("ec2")
    expected = {"Filters": [{"Name": "tag:kubernetes.io/role/internal-elb", "Values": ["1"]}]}
    two = [
        {"SubnetId": "subnet-b", "VpcId": "vpc-1", "AvailabilityZone": "us-west-2b"},
        {"SubnetId": "subnet-a", "VpcId": "vpc-1", "AvailabilityZone": "us-west-2a"},
    ]
    stub.add_response("describe_subnets", {"Subnets": two}, expected)
    stub.add_response("describe_subnets", {"Subnets": two[:1]}, expected)
    with stub:
        assert aws.find_private_subnets(ec2) == ["subnet-a", "subnet-b"]
        with pytest.raises(aws.AwsUnavailable, match="two availability zones"):
            aws.find_private_subnets(ec2)


def test_missing_roles_reads_iam() -> None:
    iam, stub = stubbed("iam", "us-east-1")
    role = {
        "Path": "/",
        "RoleName": aws.AUTO_MODE_CLUSTER_ROLE,
        "RoleId": "AROAEXAMPLEEXAMPLE1",
        "Arn": f"arn:aws:iam::111122223333:role/{aws.AUTO_MODE_CLUSTER_ROLE}",
        "CreateDate": "2026-01-01T00:00:00Z",
    }
    stub.add_response("get_role", {"Role": role}, {"RoleName": aws.AUTO_MODE_CLUSTER_ROLE})
    stub.add_client_error(
        "get_role", service_error_code="NoSuchEntity", expected_params={"RoleName": aws.AUTO_MODE_NODE_ROLE}
    )
    with stub:
        missing = aws.missing_roles([aws.AUTO_MODE_CLUSTER_ROLE, aws.AUTO_MODE_NODE_ROLE], iam)
    assert missing == [aws.AUTO_MODE_NODE_ROLE]


def test_the_printed_build_steps_create_ecr_repositories_as_build_sh_would() -> None:
    """The notebooks' build instructions create the repository first (build.sh's own create then never runs), so they
    must set what build.sh sets: immutable tags, scan on push, the workshop's tag."""
    from helpers.layers.agent import deploy as agent_deploy
    from helpers.layers.mcp import deploy as mcp_deploy

    build_sh = (agent_deploy.BUILD_SCRIPT).read_text()
    assert "--image-tag-mutability IMMUTABLE" in build_sh and "scanOnPush=true" in build_sh
    registry = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
    for steps in (agent_deploy.build_instructions(registry, "us-west-2"),
                  mcp_deploy.build_instructions(f"{registry}/llm-eks-workshop/mcp-web-search:0.1.0", "us-west-2")):
        create = next(line for line in steps.splitlines() if "create-repository" in line)
        assert "--image-tag-mutability IMMUTABLE" in create and "scanOnPush=true" in create
        assert "Key=workshop,Value=llm-eks-workshop" in create
