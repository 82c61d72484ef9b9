"""What the `eks` target needs: credentials, region, kube context, CLIs and the GPU/Inferentia quotas (each step with a deadline)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from helpers.config import Settings
from helpers.local.doctor.check import Check, Level
from helpers.local.doctor.local import settings_check

if TYPE_CHECKING:  # boto3 is imported lazily: the local target does not need it
    import boto3


T = TypeVar("T")


AWS_TIMEOUT_S = 10.0  # hard deadline for any single AWS step (also covers a hanging DNS lookup)


@dataclass(frozen=True)
class Quota:
    """An AWS service quota a node pool depends on, and how much of it the workshop needs."""

    name: str
    service_code: str
    quota_code: str
    needed: float
    why: str
    level: Level = "error"

    def console_url(self, region: str) -> str:
        """The Service Quotas console page where an increase is requested."""
        return (f"https://{region}.console.aws.amazon.com/servicequotas/home/services/"
                f"{self.service_code}/quotas/{self.quota_code}")


QUOTAS: tuple[Quota, ...] = (
    Quota("quota G and VT vCPUs", "ec2", "L-DB2E81BA", 48,
          "Running On-Demand G and VT instances: the `gpu` node pool's g5.12xlarge / g6.12xlarge need 48 vCPUs "
          "each (96 to also run the vision model)"),
    Quota("quota Inf vCPUs", "ec2", "L-1945791B", 4,
          "Running On-Demand Inf instances: the optional `inf2` node pool needs 4 vCPUs for one inf2.xlarge",
          level="warning"),
)


class _Deadline(Exception):
    """An AWS step did not finish within AWS_TIMEOUT_S."""


def _within(seconds: float, fn: Callable[[], T]) -> T:
    """Run fn in a daemon thread and give up after `seconds` (DNS lookups ignore botocore's timeouts)."""
    box: dict[str, Any] = {}

    def attempt() -> None:
        """Run fn, keeping its result or its exception for the caller."""
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Deadline(f"no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _boto_config() -> Any:
    from botocore.config import Config

    return Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"})


def _credentials_fix(profile: str | None) -> str:
    p = f" --profile {profile}" if profile else ""
    return (f"Sign in: `aws configure{p}` (access keys) or `aws sso login{p}` (IAM Identity Center), "
            "then re-run the doctor.")


def _aws_failure(exc: BaseException, name: str, service: str, region: str, profile: str | None) -> Check:
    """Turn any error of an AWS call into a failed check with the fix that matches it."""
    from botocore import exceptions as bex

    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
        return Check(name, False, "no AWS credentials found", _credentials_fix(profile))
    if isinstance(exc, bex.ProfileNotFound):
        return Check(name, False, f"AWS profile {profile!r} does not exist",
                     "Unset AWS_PROFILE, or create the profile: `aws configure --profile <name>`.")
    if isinstance(exc, (bex.SSOError, bex.SSOTokenLoadError, bex.UnauthorizedSSOTokenError, bex.TokenRetrievalError)):
        return Check(name, False, "the AWS SSO session is missing or expired", _credentials_fix(profile))
    if isinstance(exc, bex.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}:
            return Check(name, False, "the AWS credentials have expired", _credentials_fix(profile))
        if code in {"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"}:
            return Check(name, False, f"AWS rejected the credentials ({code})", _credentials_fix(profile))
        if code in {"AccessDenied", "AccessDeniedException"}:
            return Check(name, False, f"access denied ({code})",
                         "Ask for a role that allows this call (the workshop's IAM policy lists it).")
        return Check(name, False, f"AWS error {code}: {exc}"[:240], "Read the message above; re-run when it is fixed.")
    if isinstance(exc, (_Deadline, bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError,
                        bex.ConnectionClosedError, bex.HTTPClientError)):
        return Check(name, False, f"cannot reach AWS {service} in {region}: {type(exc).__name__}",
                     "Check the network (VPN, proxy: HTTPS_PROXY) and that AWS_REGION is a real region; re-run.")
    return Check(name, False, f"{type(exc).__name__}: {exc}"[:240], _credentials_fix(profile))


def region_check(session: boto3.Session, settings: Settings) -> Check:
    """The AWS region is set for the CLI/SDK, is real, and matches the one the workshop deploys to."""
    region = settings.aws_region
    sdk = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or session.region_name
    known = {r for part in session.get_available_partitions() for r in session.get_available_regions("eks", part)}
    if region not in known:
        return Check("aws region", False, f"{region!r} is not an AWS region where EKS runs",
                     "Set WORKSHOP_AWS_REGION=<region, e.g. us-west-2> in `.env`.")
    if not sdk:
        return Check("aws region", False, f"no region set for the AWS CLI/SDK (the workshop deploys to {region})",
                     f"`export AWS_REGION={region}` (or `aws configure set region {region}`); to deploy elsewhere "
                     "also set WORKSHOP_AWS_REGION in `.env`.")
    if sdk != region:
        return Check("aws region", False, f"the AWS CLI/SDK uses {sdk}, the workshop deploys to {region}",
                     f"`export AWS_REGION={region}`, or set WORKSHOP_AWS_REGION={sdk} in `.env` to deploy there.",
                     level="warning")
    return Check("aws region", True, f"{region} (AWS CLI/SDK and workshop agree)")


def identity_check(session: boto3.Session, region: str) -> Check:
    """Who AWS thinks we are (STS GetCallerIdentity), failing fast without credentials or network."""
    from botocore.exceptions import NoCredentialsError

    name = "aws identity"
    profile = session.profile_name if session.profile_name != "default" else None
    try:
        creds = _within(AWS_TIMEOUT_S, session.get_credentials)
        if creds is None:
            raise NoCredentialsError()
        sts = session.client("sts", region_name=region, config=_boto_config())
        ident = _within(AWS_TIMEOUT_S, sts.get_caller_identity)
    except Exception as exc:  # every failure becomes a check with a fix
        return _aws_failure(exc, name, "STS", region, profile)
    return Check(name, True, f"account {ident['Account']}, {ident['Arn']}")


def quota_check(client: Any, quota: Quota, region: str) -> Check:
    """Read one service quota (falling back to the AWS default when the account has no override)."""
    request = (f"Request an increase to at least {quota.needed:g}: {quota.console_url(region)} or `aws service-quotas "
               f"request-service-quota-increase --service-code {quota.service_code} --quota-code "
               f"{quota.quota_code} --desired-value {quota.needed:g} --region {region}` (approval can take hours).")
    try:
        try:
            got = _within(AWS_TIMEOUT_S, lambda: client.get_service_quota(
                ServiceCode=quota.service_code, QuotaCode=quota.quota_code))
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") != "NoSuchResourceException":
                raise
            got = _within(AWS_TIMEOUT_S, lambda: client.get_aws_default_service_quota(
                ServiceCode=quota.service_code, QuotaCode=quota.quota_code))
    except Exception as exc:  # every failure becomes a check with a fix
        check = _aws_failure(exc, quota.name, "Service Quotas", region, None)
        check.level = quota.level if check.level == "error" else check.level
        return check
    value = float(got["Quota"]["Value"])
    ok = value >= quota.needed
    return Check(quota.name, ok, f"{value:g} vCPUs in {region}; {quota.why}", "" if ok else request, level=quota.level)


def kube_context_check(settings: Settings) -> Check:
    """kubectl's current context (read from the kubeconfig, no cluster call) points at the workshop cluster."""
    fix = (f"`aws eks update-kubeconfig --name {settings.cluster_name} --region {settings.aws_region}` "
           "(after the cluster exists).")
    try:
        from kubernetes.config import list_kube_config_contexts
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        return Check("kube context", False, "the kubernetes Python client is not installed",
                     "Run `make setup` to install the workshop's environment.")
    try:
        _, active = list_kube_config_contexts()
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        return Check("kube context", False, f"no usable kubeconfig ({str(exc)[:120]})", fix)
    if not active:
        return Check("kube context", False, "the kubeconfig has no current context", fix)
    cluster = str(active.get("context", {}).get("cluster", ""))
    detail = f"{active.get('name')} → cluster {cluster}"
    if not (cluster == settings.cluster_name or cluster.endswith(f"/{settings.cluster_name}")):
        return Check("kube context", False, f"{detail}, not the workshop cluster {settings.cluster_name}",
                     fix + f" Or set WORKSHOP_CLUSTER_NAME to the cluster you use.", level="warning")
    return Check("kube context", True, detail)


def cli_checks() -> list[Check]:
    """The optional `aws` and `kubectl` command-line tools (the notebooks use the Python clients)."""
    links = {"aws": "https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html",
             "kubectl": "https://kubernetes.io/docs/tasks/tools/"}
    return [Check(f"{tool} CLI", shutil.which(tool) is not None,
                  "found on PATH" if shutil.which(tool) else "not found on PATH (optional: handy for exploring)",
                  "" if shutil.which(tool) else f"Install it: {url}", level="warning")
            for tool, url in links.items()]


def eks_checks(session: boto3.Session | None = None) -> list[Check]:
    """Everything the `eks` target needs: credentials, region, kube context, CLIs and GPU/Inf quotas."""
    loaded, settings = settings_check()
    if settings is None:
        return [loaded]
    region = settings.aws_region
    checks: list[Check] = []
    try:
        import boto3

        session = session or boto3.Session()
    except Exception as exc:  # a broken ~/.aws/config or unknown AWS_PROFILE surfaces here
        failure = _aws_failure(exc, "aws identity", "STS", region, os.environ.get("AWS_PROFILE"))
        return [failure, kube_context_check(settings), *cli_checks()]
    checks.append(region_check(session, settings))
    identity = identity_check(session, region)
    checks.append(identity)
    checks.append(kube_context_check(settings))
    checks += cli_checks()
    if identity.ok:
        client = session.client("service-quotas", region_name=region, config=_boto_config())
        checks += [quota_check(client, quota, region) for quota in QUOTAS]
    else:
        checks += [Check(q.name, False, "not checked: no working AWS identity (see above)",
                         f"Fix the AWS identity first, then re-run the doctor. The quota needs at least {q.needed:g} "
                         f"vCPUs: {q.console_url(region)}", level=q.level) for q in QUOTAS]
    return checks
