"""Chapter 04 on EKS: the gateway's Kubernetes objects, its Secrets (generated at apply time), the agent's virtual key,
and the optional Amazon Bedrock route's IAM side: the CloudFormation stack (cloudformation/gateway-bedrock.yaml) that
creates the gateway's role and its EKS Pod Identity association, planned offline, checked against botocore's service
models, deployed on request.

The Bedrock route cannot be exercised offline: nothing here answers a Converse call. What is checked offline is the
template (cfn-lint, checkov, bedrock_security_checks), the permission set (every action exists in botocore's models, and the
calls LiteLLM makes for the route need exactly those actions) and the rendered gateway config."""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from helpers.config import ROOT, Settings
from helpers.errors import WorkshopError
from helpers.infra import manifests
from helpers.layers.gateway.config import CHAPTER, tracing_context

if TYPE_CHECKING:
    from helpers.target import Target


def _secret_value(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


SECRET_NAME = "litellm-secrets"
POSTGRES_SECRET_NAME = "litellm-postgres"


def render(t: Target, overrides: dict[str, Any] | None = None, include_on_demand: bool = False,
           tracing: bool | None = None) -> list[manifests.Manifest]:
    """The chapter's Kubernetes objects for the target (the ConfigMap holds gateway_config(t, tracing))."""
    context = {"tracing": tracing_context(t, tracing)}
    return t.render(CHAPTER, overrides=manifests.deep_merge(context, overrides or {}),
                    include_on_demand=include_on_demand)


def secret_objects(namespace: str, settings: Settings, existing: dict[str, dict[str, str]] | None = None
                   ) -> list[dict[str, Any]]:
    """The Secrets the gateway needs, with values generated now (or kept from `existing`); never written to disk."""
    existing = existing or {}
    pg = existing.get(POSTGRES_SECRET_NAME) or {"POSTGRES_USER": "litellm", "POSTGRES_DB": "litellm",
                                                  "POSTGRES_PASSWORD": secrets.token_urlsafe(24)}
    old = existing.get(SECRET_NAME) or {}
    postgres = manifests.chapter_parameters(CHAPTER)["postgres"]["name"]
    values = {
        "LITELLM_MASTER_KEY": _secret_value(settings.gateway_master_key),
        "LITELLM_SALT_KEY": old.get("LITELLM_SALT_KEY") or "sk-salt-" + secrets.token_urlsafe(24),
        "REDIS_PASSWORD": old.get("REDIS_PASSWORD") or secrets.token_urlsafe(24),
        "DATABASE_URL": f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@{postgres}.{namespace}.svc"
                        f":5432/{pg['POSTGRES_DB']}",
        "MODEL_SERVER_API_KEY": _secret_value(settings.model_server_api_key),  # vLLM's --api-key (chapter 02)
        "EMBEDDING_API_KEY": _secret_value(settings.serve_api_key),  # the Ray Serve app's bearer key (chapter 03)
    }
    labels = dict(manifests.COMMON_LABELS)
    return [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": POSTGRES_SECRET_NAME, "namespace": namespace, "labels": labels}, "stringData": pg},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": labels}, "stringData": values},
    ]


def create_secrets(t: Target) -> list[str]:
    """Create or update the gateway's Secrets in the cluster (generated passwords kept across runs); return their names."""
    import base64

    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException

    t.cluster.require()
    namespace = t.settings.namespace
    core = k8s_client.CoreV1Api()
    existing: dict[str, dict[str, str]] = {}
    for name in (POSTGRES_SECRET_NAME, SECRET_NAME):
        try:
            data = core.read_namespaced_secret(name, namespace).data or {}
            existing[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        except ApiException as error:
            if error.status != 404:
                raise
    objects = secret_objects(namespace, t.settings, existing)
    t.apply(objects)
    return [o["metadata"]["name"] for o in objects]


def agent_key_request(params: dict[str, Any] | None = None, bedrock: bool = False) -> dict[str, Any]:
    """The body of POST /key/generate for the agent's virtual key: its models, budget and rate limits (plus the Bedrock
    route when it is on, so the agent's RAGAs judge may use it)."""
    p = params or manifests.chapter_parameters(CHAPTER)["agent_key"]
    models = list(p["models"]) + ([bedrock_parameters()["route"]] if bedrock else [])
    return {"key_alias": p["alias"], "models": models, "max_budget": p["max_budget"],
            "budget_duration": p["budget_duration"], "rpm_limit": p["rpm_limit"], "tpm_limit": p["tpm_limit"],
            "metadata": {"created_by": "llm-eks-workshop", "for": "chapter 08 supervisor agent"}}


# ---------------------------------------------------------------- the Bedrock route: IAM through Pod Identity

BEDROCK_TEMPLATE = ROOT / "manifests" / CHAPTER / "cloudformation" / "gateway-bedrock.yaml"
BEDROCK_ROLE = "GatewayRole"  # logical ids inside the template
BEDROCK_ASSOCIATION = "GatewayPodIdentity"
BEDROCK_ACTIONS = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")
BEDROCK_RUNTIME = "bedrock-runtime"  # the botocore service model the route's calls belong to
_REQUIRES = re.compile(r"requires permission for the (bedrock:\w+) action")


def bedrock_parameters() -> dict[str, Any]:
    """The `bedrock` block of chapter 04's parameters (the switch, route name, model id, service account)."""
    return manifests.chapter_parameters(CHAPTER)["bedrock"]


def bedrock_enabled(t: Target, overrides: dict[str, Any] | None = None) -> bool:
    """Whether the Bedrock route is rendered for the target: eks and bedrock.enabled, never local."""
    params = manifests.deep_merge(bedrock_parameters(), (overrides or {}).get("bedrock") or {})
    return bool(t.is_eks and params["enabled"])


def bedrock_stack_name(settings: Settings) -> str:
    """The stack's name, per cluster: `<cluster>-gateway-bedrock` (teardown names every template's stack so)."""
    return f"{settings.cluster_name}-{BEDROCK_TEMPLATE.stem}"


def bedrock_model_arn(model_id: str, region: str, partition: str = "aws") -> str:
    """A foundation model's ARN: AWS's model in a Region, so no account id."""
    return f"arn:{partition}:bedrock:{region}::foundation-model/{model_id}"


def bedrock_stack_parameters(settings: Settings, params: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """The create-stack parameters: this cluster, the workshop namespace, the gateway's service account, the model."""
    params = params or bedrock_parameters()
    values = {"ClusterName": settings.cluster_name, "Namespace": settings.namespace,
              "ServiceAccountName": params["service_account"], "ModelId": params["model_id"]}
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


def bedrock_create_request(settings: Settings, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cloudformation:CreateStack request (the template body is the file; shown by its path in a plan)."""
    return {
        "StackName": bedrock_stack_name(settings),
        "TemplateBody": f"<{BEDROCK_TEMPLATE.relative_to(ROOT)}>",
        "Parameters": bedrock_stack_parameters(settings, params),
        "Capabilities": ["CAPABILITY_IAM"],  # the stack creates an IAM role
        "OnFailure": "DELETE",  # a failed creation leaves no half-made role behind
        "Tags": [{"Key": k, "Value": v} for k, v in manifests.AWS_TAG.items()],
    }


@dataclass(frozen=True)
class BedrockPlan:
    """What deploying the Bedrock stack would do, worked out offline: the request, and the permissions it grants."""

    stack: str
    region: str
    request: dict[str, Any]
    grants: tuple[tuple[str, str], ...]  # (action, resource) the role gets, resolved for the region and model

    def rows(self) -> list[dict[str, str]]:
        """The grants as table rows."""
        return [{"action": a, "resource": r, "stack": self.stack, "region": self.region} for a, r in self.grants]


def bedrock_plan(t: Target, params: dict[str, Any] | None = None) -> BedrockPlan:
    """The stack the notebook would create for the target's cluster and region, without calling AWS."""
    params = params or bedrock_parameters()
    region = t.settings.aws_region
    return BedrockPlan(bedrock_stack_name(t.settings), region, bedrock_create_request(t.settings, params),
                       tuple(bedrock_grants(region, params["model_id"])))


def _template() -> dict[str, Any]:
    from helpers.layers.rag.deploy import load_template

    return load_template(BEDROCK_TEMPLATE)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = ((template.get("Resources") or {}).get(BEDROCK_ROLE) or {}).get("Properties") or {}
    return [s for p in role.get("Policies") or [] for s in _as_list(p["PolicyDocument"]["Statement"])]


def _resolve(value: Any, region: str, model_id: str, partition: str = "aws") -> str:
    text = value.get("Fn::Sub") if isinstance(value, dict) else value
    return str(text).replace("${AWS::Partition}", partition).replace("${AWS::Region}", region) \
        .replace("${ModelId}", model_id)


def bedrock_grants(region: str, model_id: str, template: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(action, resource) of every Allow statement of the role's policy, as AWS will evaluate it in the region."""
    template = template if template is not None else _template()
    return [(a, _resolve(r, region, model_id)) for s in _role_statements(template) if s.get("Effect") == "Allow"
            for a in _as_list(s.get("Action")) for r in _as_list(s.get("Resource"))]


@dataclass(frozen=True)
class Check:
    """One property of the template, and whether it holds."""

    check: str
    ok: bool
    detail: str

    def as_row(self) -> dict[str, str]:
        """The check as a table row."""
        return {**asdict(self), "ok": "✔" if self.ok else "✘"}


def bedrock_security_checks(template: dict[str, Any] | None = None) -> list[Check]:
    """Least privilege, checked on the template: who may assume the role, what it may do, on what, and the link."""
    template = template if template is not None else _template()
    resources = template.get("Resources") or {}
    role = (resources.get(BEDROCK_ROLE) or {}).get("Properties") or {}
    trust = _as_list((role.get("AssumeRolePolicyDocument") or {}).get("Statement") or [])
    principals = [p for s in trust for p in _as_list((s.get("Principal") or {}).get("Service"))]
    trust_actions = sorted({a for s in trust for a in _as_list(s.get("Action"))})
    scoped = bool(trust) and all({"aws:SourceAccount", "aws:RequestTag/kubernetes-service-account",
                                  "aws:RequestTag/kubernetes-namespace"} <= set((s.get("Condition") or {})
                                                                                 .get("StringEquals") or {})
                                 for s in trust)
    statements = _role_statements(template)
    actions = sorted({a for s in statements for a in _as_list(s.get("Action"))})
    targets = [_resolve(r, "REGION", "MODEL") for s in statements for r in _as_list(s.get("Resource"))]
    association = (resources.get(BEDROCK_ASSOCIATION) or {}).get("Properties") or {}
    return [
        Check("role: trusted by EKS Pod Identity only, for one service account",
              principals == ["pods.eks.amazonaws.com"] and trust_actions == ["sts:AssumeRole", "sts:TagSession"]
              and scoped, f"principals {principals}, actions {trust_actions}, scoped: {scoped}"),
        Check("role: no managed policy, Allow only", not role.get("ManagedPolicyArns")
              and all(s.get("Effect") == "Allow" for s in statements), f"{len(statements)} inline statement(s)"),
        Check("actions: exactly InvokeModel and InvokeModelWithResponseStream", actions == sorted(BEDROCK_ACTIONS),
              ", ".join(actions)),
        Check("resource: one foundation model in the stack's Region, no wildcard",
              targets == ["arn:aws:bedrock:REGION::foundation-model/MODEL"], ", ".join(targets)),
        Check("Pod Identity association for the gateway's service account",
              association.get("RoleArn") == {"Fn::GetAtt": [BEDROCK_ROLE, "Arn"]}
              and association.get("ServiceAccount") == {"Ref": "ServiceAccountName"}, str(association.get("RoleArn"))),
    ]


def bedrock_lint() -> Any:
    """cfn-lint on the template (the same runner as chapter 06's OpenSearch template)."""
    from helpers.layers.rag.deploy import lint

    return lint(BEDROCK_TEMPLATE)


# ---------------------------------------------------------------- the permission set against botocore's models


def iam_action_services(actions: tuple[str, ...] | list[str] = BEDROCK_ACTIONS) -> dict[str, list[str]]:
    """For each IAM action, the botocore service models that have an operation of that name and sign as its prefix
    (bedrock-runtime signs as `bedrock`): an action no model knows maps to []."""
    import botocore.session

    session = botocore.session.get_session()
    found: dict[str, list[str]] = {a: [] for a in actions}
    for service in session.get_available_services():
        if not service.startswith("bedrock"):
            continue
        model = session.get_service_model(service)
        prefix = model.metadata.get("signingName") or model.metadata.get("endpointPrefix")
        for action in actions:
            namespace, _, operation = action.partition(":")
            if namespace == prefix and operation in model.operation_names:
                found[action].append(service)
    return found


def _uri_pattern(uri: str) -> re.Pattern[str]:
    path = uri.split("?", 1)[0]
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def operation_for_request(method: str, url: str, service: str = BEDROCK_RUNTIME) -> str | None:
    """The botocore operation of a service model an HTTP request is (method + path against its requestUri)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    path = unquote(urlsplit(url).path)
    for name in model.operation_names:
        http = model.operation_model(name).http
        if http.get("method") == method.upper() and _uri_pattern(http.get("requestUri", "")).match(path):
            return name
    return None


def required_action(operation: str, service: str = BEDROCK_RUNTIME) -> str | None:
    """The IAM action an operation's documentation names ("This operation requires permission for the ... action")."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    doc = re.sub(r"<[^>]+>", "", model.operation_model(operation).documentation or "")
    match = _REQUIRES.search(doc)
    return match.group(1) if match else (f"{model.metadata['signingName']}:{operation}"
                                          if operation in model.operation_names else None)


def permission_rows(requests: list[dict[str, Any]], grants: list[tuple[str, str]]) -> list[dict[str, str]]:
    """One row per distinct call: HTTP request -> botocore operation -> IAM action -> granted by the role or not."""
    granted = {a for a, _ in grants}
    rows: dict[str, dict[str, str]] = {}
    for request in requests:
        operation = operation_for_request(request["method"], request["url"])
        action = required_action(operation) if operation else None
        path = unquote(urlsplit(request["url"]).path)
        rows[f"{request['method']} {path}"] = {"request": f"{request['method']} {path}",
                                               "operation": operation or "UNKNOWN", "IAM action": action or "UNKNOWN",
                                               "granted": "✔" if action in granted else "✘"}
    return list(rows.values())


# ---------------------------------------------------------------- AWS calls (on request)


def bedrock_model_check(t: Target, bedrock: Any = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask Bedrock (GetFoundationModel, your credentials) whether the route's model is ACTIVE and invocable on demand
    in the workshop's region; WorkshopError with the fix otherwise."""
    from helpers.infra import aws

    params = params or bedrock_parameters()
    region = t.settings.aws_region
    bedrock = bedrock or aws.client("bedrock", region)
    details = aws.call(f"read Bedrock model {params['model_id']}", bedrock.get_foundation_model,
                       modelIdentifier=params["model_id"])["modelDetails"]
    status = (details.get("modelLifecycle") or {}).get("status")
    inference = list(details.get("inferenceTypesSupported") or [])
    found = {"model": details["modelId"], "arn": details["modelArn"], "lifecycle": status,
             "inference types": ", ".join(inference), "region": region}
    if status != "ACTIVE" or "ON_DEMAND" not in inference:
        raise WorkshopError(f"Bedrock model {params['model_id']} in {region} is {status} with inference types "
                            f"{inference or 'none'}: the gateway's role grants on-demand calls in this region only.",
                            "Choose another model in manifests/04-gateway/parameters.yaml (bedrock.model_id) that is "
                            "ACTIVE and ON_DEMAND here, or another region; then plan the stack again.")
    if details["modelArn"] != bedrock_model_arn(params["model_id"], region):
        raise WorkshopError(f"Bedrock answers with ARN {details['modelArn']}, not the one the role names.",
                            "Check the region and the partition of your account.")
    return found


def deploy_bedrock(t: Target, cloudformation: Any = None, wait: bool = True, dry_run: bool = False,
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create the stack (the role and the association; not billable: Bedrock bills per token); return its outputs.

    dry_run: the plan's CreateStack request, and no call to AWS (works offline)."""
    from helpers.infra import aws

    plan = bedrock_plan(t, params)
    if dry_run:
        return {"dry_run": True, **plan.request}
    cfn = cloudformation or aws.client("cloudformation", plan.region)
    request = {**plan.request, "TemplateBody": BEDROCK_TEMPLATE.read_text()}
    aws.call(f"create stack {plan.stack}", cfn.create_stack, **request)
    if wait:
        cfn.get_waiter("stack_create_complete").wait(StackName=plan.stack,
                                                      WaiterConfig={"Delay": 10, "MaxAttempts": 60})
    return bedrock_stack_outputs(t, cfn)


def bedrock_stack_outputs(t: Target, cloudformation: Any = None) -> dict[str, str]:
    """The stack's outputs (GatewayRoleArn, ModelArn, ...), or {} when it does not exist."""
    from botocore.exceptions import ClientError

    from helpers.infra import aws

    cfn = cloudformation or aws.client("cloudformation", t.settings.aws_region)
    try:
        stack = cfn.describe_stacks(StackName=bedrock_stack_name(t.settings))["Stacks"][0]
    except ClientError:  # ValidationError: the stack does not exist
        return {}
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def delete_bedrock(t: Target, cloudformation: Any = None, wait: bool = True) -> str:
    """Delete the stack: the role and the association (the route then fails with an AWS credentials error)."""
    from helpers.infra import aws

    cfn = cloudformation or aws.client("cloudformation", t.settings.aws_region)
    name = bedrock_stack_name(t.settings)
    aws.call(f"delete stack {name}", cfn.delete_stack, StackName=name)
    if wait:
        cfn.get_waiter("stack_delete_complete").wait(StackName=name)
    return name
