"""Who the AWS calls run as, in which region, and the quotas the GPU and Inferentia pools need; every failure as AwsUnavailable with its fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from helpers.config import Settings
from helpers.errors import WorkshopError


CREDENTIALS_FIX = (
    "Configure AWS credentials for the account that runs the workshop: `aws configure sso` then "
    "`export AWS_PROFILE=<profile>` (or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), and check with "
    "`python -m helpers.infra.aws identity`. The local target needs no AWS account."
)


class AwsUnavailable(WorkshopError):
    """AWS cannot be used right now (no credentials, expired session, access denied); `fix` says what to do."""

    fix = CREDENTIALS_FIX


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


def quota_for_category(category: str) -> QuotaSpec | None:
    """The on-demand vCPU quota an instance category counts against (None when the workshop does not track it)."""
    return next((spec for spec in QUOTAS.values() if category in spec.instance_categories), None)


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


def unavailable(error: Exception, action: str) -> AwsUnavailable:
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


def call(action: str, fn: Any, **params: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**params)
    except (BotoCoreError, ClientError) as error:
        raise unavailable(error, action) from error


def identity(sts: Any = None) -> Identity:
    """Who the AWS credentials belong to (sts:GetCallerIdentity); raises AwsUnavailable without credentials."""
    sts = sts or client("sts")
    answer = call("identify the caller", sts.get_caller_identity)
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
            raise unavailable(error, f"read quota {spec.quota_code}") from error
        answer = call(
            f"read the default of quota {spec.quota_code}",
            sq.get_aws_default_service_quota,
            ServiceCode=spec.service_code,
            QuotaCode=spec.quota_code,
        )
        source = "default"
    except BotoCoreError as error:  # no credentials, no endpoint
        raise unavailable(error, f"read quota {spec.quota_code}") from error
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
