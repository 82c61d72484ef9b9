"""The OpenSearch domain as CloudFormation: load, lint, check its security, plan and (on request) deploy the stack.

The template, `manifests/06-vector-index/cloudformation/opensearch-domain.yaml`, is plain CloudFormation, not a
Kubernetes template: it sits in a sub-folder that helpers.infra.manifests does not render. It creates the agent's
IAM role (trusted only by EKS Pod Identity for one service account), the domain (in the VPC, encrypted at
rest and between nodes, HTTPS with TLS 1.2+, fine-grained access control, an access policy naming only the
agent's role), a security group admitting HTTPS from the cluster only, and the Pod Identity association.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from helpers.config import ROOT, Settings, get_settings

TEMPLATE = ROOT / "manifests" / "06-vector-index" / "cloudformation" / "opensearch-domain.yaml"
AGENT_ROLE = "AgentRole"  # logical ids inside the template
DOMAIN = "Domain"
POD_IDENTITY = "AgentPodIdentity"
DEFAULT_SERVICE_ACCOUNT = "supervisor-agent"
TLS_12_POLICIES = ("Policy-Min-TLS-1-2-2019-07", "Policy-Min-TLS-1-2-PFS-2023-10",
                   "Policy-Min-TLS-1-2-RFC9151-FIPS-2024-08", "Policy-Min-TLS-1-2-FIPS-PQ-2026-10")
OPEN_NETWORKS = ("0.0.0.0/0", "::/0")


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that understands CloudFormation's short intrinsic tags (!Ref, !GetAtt, !Sub, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def template_text(path: Path = TEMPLATE) -> str:
    """The template as written, comments included (what the notebook shows)."""
    return path.read_text()


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as data, intrinsic functions in their long form ({"Ref": ...}, {"Fn::GetAtt": [...]})."""
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


# ---------------------------------------------------------------- lint


@dataclass(frozen=True)
class LintResult:
    """What cfn-lint said about a template."""

    command: str
    returncode: int
    findings: tuple[dict[str, Any], ...]

    @property
    def ok(self) -> bool:
        """True when cfn-lint found nothing (exit code 0)."""
        return self.returncode == 0 and not self.findings


def cfn_lint_path() -> str:
    """The cfn-lint executable of this Python environment (or on PATH)."""
    local = Path(sys.executable).with_name("cfn-lint")
    found = str(local) if local.exists() else shutil.which("cfn-lint")
    if not found:
        raise FileNotFoundError("cfn-lint is not installed: `pip install cfn-lint` (it is in requirements/workshop.txt)")
    return found


def lint(path: Path = TEMPLATE) -> LintResult:
    """Run cfn-lint (AWS's CloudFormation linter: schema, values, references, best practices) on the template."""
    exe = cfn_lint_path()
    proc = subprocess.run([exe, "--format", "json", "--", str(path)], capture_output=True, text=True, timeout=300)
    try:
        findings = tuple(json.loads(proc.stdout or "[]"))
    except json.JSONDecodeError:
        findings = ({"Message": (proc.stdout + proc.stderr).strip()[-500:]},)
    shown = f"cfn-lint {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    return LintResult(command=shown, returncode=proc.returncode, findings=findings)


# ---------------------------------------------------------------- security checks


@dataclass(frozen=True)
class DomainCheck:
    """One security property of the template, and whether it holds."""

    check: str
    ok: bool
    detail: str

    def as_row(self) -> dict[str, str]:
        """The check as a table row."""
        row = asdict(self)
        row["ok"] = "✔" if self.ok else "✘"
        return row


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in (template.get("Resources") or {}).items() if r.get("Type") == kind}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principals(statement: dict[str, Any]) -> list[Any]:
    principal = statement.get("Principal")
    if principal == "*" or not isinstance(principal, dict):
        return [principal]
    return [p for values in principal.values() for p in _as_list(values)]


def _contains(value: Any, needles: tuple[str, ...]) -> bool:
    if isinstance(value, str):
        return any(n in value for n in needles)
    if isinstance(value, dict):
        return any(_contains(v, needles) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, needles) for v in value)
    return False


def _is_agent_role(value: Any) -> bool:
    return value == {"Fn::GetAtt": [AGENT_ROLE, "Arn"]}


def security_checks(template: dict[str, Any] | None = None) -> list[DomainCheck]:
    """Every security property the workshop requires of the domain template (all must hold)."""
    template = template if template is not None else load_template()
    domains = _resources(template, "AWS::OpenSearchService::Domain")
    if len(domains) != 1:
        return [DomainCheck("one OpenSearch domain", False, f"the template defines {len(domains)} domains")]
    props = next(iter(domains.values())).get("Properties") or {}
    checks: list[DomainCheck] = []

    statements = _as_list((props.get("AccessPolicies") or {}).get("Statement") or [])
    principals = [p for s in statements for p in _principals(s)]
    wildcard = [p for p in principals if p == "*" or (isinstance(p, str) and "*" in p)]
    checks.append(DomainCheck("access policy: no '*' principal", bool(statements) and not wildcard,
                              f"{len(statements)} statement(s); wildcard principals: {wildcard or 'none'}"))
    only_agent = bool(principals) and all(_is_agent_role(p) for p in principals)
    allows = [s for s in statements if s.get("Effect") == "Allow"]
    checks.append(DomainCheck("access policy: only the agent's role", only_agent and len(allows) == len(statements),
                              "principal: " + ", ".join(json.dumps(p) for p in principals)))
    checks.append(DomainCheck("no 0.0.0.0/0 or ::/0 anywhere", not _contains(template, OPEN_NETWORKS),
                              "no open network range in any property"
                              if not _contains(template, OPEN_NETWORKS) else "an open network range is present"))
    checks.append(DomainCheck("encryption at rest", (props.get("EncryptionAtRestOptions") or {}).get("Enabled") is True,
                              f"EncryptionAtRestOptions: {props.get('EncryptionAtRestOptions')}"))
    checks.append(DomainCheck("node-to-node encryption",
                              (props.get("NodeToNodeEncryptionOptions") or {}).get("Enabled") is True,
                              f"NodeToNodeEncryptionOptions: {props.get('NodeToNodeEncryptionOptions')}"))
    endpoint = props.get("DomainEndpointOptions") or {}
    checks.append(DomainCheck("HTTPS enforced with TLS 1.2 or newer",
                              endpoint.get("EnforceHTTPS") is True and endpoint.get("TLSSecurityPolicy") in TLS_12_POLICIES,
                              f"EnforceHTTPS={endpoint.get('EnforceHTTPS')}, {endpoint.get('TLSSecurityPolicy')}"))
    fgac = props.get("AdvancedSecurityOptions") or {}
    checks.append(DomainCheck("fine-grained access control, IAM identities only",
                              fgac.get("Enabled") is True and fgac.get("InternalUserDatabaseEnabled") is False
                              and not fgac.get("AnonymousAuthEnabled"),
                              f"Enabled={fgac.get('Enabled')}, internal users={fgac.get('InternalUserDatabaseEnabled')}"))
    vpc = props.get("VPCOptions") or {}
    checks.append(DomainCheck("in a VPC (no public endpoint)", bool(vpc.get("SubnetIds")) and bool(vpc.get("SecurityGroupIds")),
                              "VPCOptions with subnets and a security group" if vpc else "no VPCOptions: public endpoint"))

    roles = _resources(template, "AWS::IAM::Role")
    role = (roles.get(AGENT_ROLE) or {}).get("Properties") or {}
    trust = _as_list((role.get("AssumeRolePolicyDocument") or {}).get("Statement") or [])
    trusted = [p for s in trust for p in _principals(s)]
    actions = sorted({a for s in trust for a in _as_list(s.get("Action"))})
    conditions = [s.get("Condition") or {} for s in trust]
    scoped = all("aws:RequestTag/kubernetes-service-account" in (c.get("StringEquals") or {}) for c in conditions)
    checks.append(DomainCheck("agent role: trusted by EKS Pod Identity for one service account",
                              trusted == ["pods.eks.amazonaws.com"] and actions == ["sts:AssumeRole", "sts:TagSession"]
                              and scoped and bool(trust),
                              f"principals {trusted}, actions {actions}, scoped to a service account: {scoped}"))
    policy_actions = [a for p in role.get("Policies") or [] for s in _as_list(p["PolicyDocument"]["Statement"])
                      for a in _as_list(s.get("Action"))]
    broad = [a for a in policy_actions if "*" in a]
    checks.append(DomainCheck("agent role: no managed policies, no wildcard actions",
                              not role.get("ManagedPolicyArns") and not broad and bool(policy_actions),
                              f"actions: {', '.join(policy_actions)}"))
    associations = _resources(template, "AWS::EKS::PodIdentityAssociation")
    linked = [a for a in associations.values() if _is_agent_role((a.get("Properties") or {}).get("RoleArn"))]
    checks.append(DomainCheck("EKS Pod Identity association for the agent's service account", len(linked) == 1,
                              f"{len(linked)} association(s) to the agent's role"))
    return checks


# ---------------------------------------------------------------- the stack


def stack_name(settings: Settings | None = None) -> str:
    """The CloudFormation stack name (per cluster, so two workshops in one account do not clash)."""
    settings = settings or get_settings()
    return f"{settings.cluster_name}-knowledge-opensearch"


def stack_parameters(vpc_id: str, subnet_ids: list[str], cluster_security_group: str, settings: Settings | None = None,
                     service_account: str = DEFAULT_SERVICE_ACCOUNT, data_nodes: int = 1) -> list[dict[str, str]]:
    """The create-stack parameters for this cluster's network and the agent's service account."""
    settings = settings or get_settings()
    values = {
        "ClusterName": settings.cluster_name,
        "Namespace": settings.namespace,
        "ServiceAccountName": service_account,
        "VpcId": vpc_id,
        "SubnetIds": ",".join(subnet_ids),
        "ClusterSecurityGroupId": cluster_security_group,
        "DataNodes": str(data_nodes),
    }
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


def create_stack_request(parameters: list[dict[str, str]], settings: Settings | None = None) -> dict[str, Any]:
    """The cloudformation:CreateStack request (the template body is the file above)."""
    settings = settings or get_settings()
    return {
        "StackName": stack_name(settings),
        "TemplateBody": f"<{TEMPLATE.relative_to(ROOT)}>",
        "Parameters": parameters,
        "Capabilities": ["CAPABILITY_IAM"],  # the stack creates an IAM role
        "OnFailure": "DELETE",  # a failed creation leaves nothing billable behind
        "Tags": [{"Key": "workshop", "Value": "llm-eks-workshop"}],
    }


def cluster_network(settings: Settings | None = None, eks: Any = None) -> dict[str, Any]:
    """The cluster's VPC, subnets and cluster security group (eks:DescribeCluster)."""
    from helpers.infra import aws

    settings = settings or get_settings()
    eks = eks or aws.client("eks")
    try:
        cluster = eks.describe_cluster(name=settings.cluster_name)["cluster"]
    except Exception as exc:  # botocore raises many kinds; all mean "cannot read the cluster"
        raise aws.AwsUnavailable(f"Cannot describe cluster {settings.cluster_name}: {exc}") from None
    vpc = cluster["resourcesVpcConfig"]
    return {"vpc_id": vpc["vpcId"], "subnet_ids": list(vpc["subnetIds"]),
            "cluster_security_group": vpc["clusterSecurityGroupId"]}


OPENSEARCH_SERVICE = "opensearchservice.amazonaws.com"
SERVICE_LINKED_ROLE = "AWSServiceRoleForAmazonOpenSearchService"  # what AWS names the role it creates


def ensure_service_linked_role(iam: Any = None) -> str:
    """Create OpenSearch Service's service-linked role unless the account has it; "created" or "exists".

    A VPC domain needs it (OpenSearch places its network interfaces in your subnets through it), and AWS creates it
    only when a domain is created from the console: a first CloudFormation stack in a fresh account fails without
    it. Idempotent: AWS answers InvalidInput "... has been taken in this account" when it exists (some emulators:
    EntityAlreadyExists)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from helpers.infra import aws

    iam = iam or aws.client("iam")
    try:
        iam.create_service_linked_role(AWSServiceName=OPENSEARCH_SERVICE,
                                       Description="OpenSearch Service: VPC access for the workshop's domain")
        return "created"
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "EntityAlreadyExists" or (code == "InvalidInput" and "has been taken" in message):
            return "exists"
        raise aws.AwsUnavailable(
            f"Cannot create the service-linked role {SERVICE_LINKED_ROLE} ({code}: {message}).",
            "Ask an account administrator to run `aws iam create-service-linked-role --aws-service-name "
            f"{OPENSEARCH_SERVICE}` once, then re-run this cell.") from error
    except BotoCoreError as error:
        raise aws.unavailable(error, f"create the service-linked role {SERVICE_LINKED_ROLE}") from error


def deploy(parameters: list[dict[str, str]], settings: Settings | None = None, cloudformation: Any = None,
           wait: bool = True, iam: Any = None, template: Path = TEMPLATE) -> dict[str, str]:
    """Create the stack (billable: the domain costs money per hour until the stack is deleted); return its outputs.

    The OpenSearch service-linked role is created first when the account lacks it. `template` is the file to
    send (the workshop's; tests on an AWS emulator pass a copy without what the emulator cannot model)."""
    from helpers.infra import aws

    settings = settings or get_settings()
    cfn = cloudformation or aws.client("cloudformation")
    ensure_service_linked_role(iam)
    request = create_stack_request(parameters, settings)
    request["TemplateBody"] = template_text(template)
    cfn.create_stack(**request)
    if wait:
        cfn.get_waiter("stack_create_complete").wait(StackName=request["StackName"],
                                                      WaiterConfig={"Delay": 30, "MaxAttempts": 80})
    return stack_outputs(settings, cfn)


def stack_outputs(settings: Settings | None = None, cloudformation: Any = None) -> dict[str, str]:
    """The stack's outputs (DomainEndpoint, AgentRoleArn, ...), or {} when the stack does not exist."""
    from helpers.infra import aws

    settings = settings or get_settings()
    cfn = cloudformation or aws.client("cloudformation")
    try:
        stack = cfn.describe_stacks(StackName=stack_name(settings))["Stacks"][0]
    except Exception:  # ValidationError: the stack does not exist
        return {}
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def delete(settings: Settings | None = None, cloudformation: Any = None, wait: bool = True) -> None:
    """Delete the stack: the domain, its data, the role and the Pod Identity association."""
    from helpers.infra import aws

    settings = settings or get_settings()
    cfn = cloudformation or aws.client("cloudformation")
    cfn.delete_stack(StackName=stack_name(settings))
    if wait:
        cfn.get_waiter("stack_delete_complete").wait(StackName=stack_name(settings))
