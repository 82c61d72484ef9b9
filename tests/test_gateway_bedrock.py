"""The gateway's optional Amazon Bedrock route (eks only, off by default): the rendered config and manifests, the
CloudFormation stack that gives the gateway its IAM role through EKS Pod Identity (cfn-lint, checkov, least privilege),
the permission set against botocore's service models and against the calls LiteLLM really makes for the route, and
the plan / deploy / delete functions (offline, and against botocore's Stubber).

The route itself cannot be exercised offline: no Bedrock answers here. LiteLLM's requests are recorded before they
leave the process (its HTTP client is replaced), which shows which operations it calls, not what Bedrock answers."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from botocore.stub import ANY, Stubber

from helpers.config import Settings
from helpers.errors import WorkshopError
from helpers.infra import manifests, teardown
from helpers.infra.manifests.cli import run_checks
from helpers.infra.manifests.prerequisites import CALLS_AWS_LABEL, prerequisites
from helpers.layers import gateway
from helpers.layers.gateway import deploy
from helpers.layers.gateway import local as gateway_local
from helpers.target import Target

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-west-2"
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop",
                    aws_region=REGION)
ON = {"bedrock": {"enabled": True}}
MODEL = "qwen.qwen3-32b-v1:0"
MODEL_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/{MODEL}"

needs_proxy = pytest.mark.skipif(not gateway.proxy_installed(), reason=f"the gateway's environment "
                                 f"{gateway_local.PROXY_VENV} does not exist: {gateway_local.INSTALL_COMMANDS}")


@pytest.fixture(scope="module")
def eks() -> Target:
    return Target("eks", SETTINGS)


def route(config: dict, name: str = "bedrock") -> dict | None:
    return next((m for m in config["model_list"] if m["model_name"] == name), None)


def gateway_pod(items: list[manifests.Manifest]) -> dict:
    return next(i.doc for i in items if i.kind == "Deployment" and i.name == "litellm")["spec"]["template"]


def client(service: str):  # noqa: ANN201 - a botocore client
    import boto3

    return boto3.client(service, region_name=REGION, aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="x")


# ---------------------------------------------------------------- the switch: off by default, eks only


def test_off_by_default_and_the_config_says_so(eks: Target) -> None:
    assert deploy.bedrock_parameters()["enabled"] is False
    assert route(gateway.gateway_config(eks)) is None
    assert "No `bedrock` route: Bedrock is off" in gateway.config_text(eks)
    items = gateway.render(eks, include_on_demand=True)
    pod = gateway_pod(items)
    assert CALLS_AWS_LABEL not in pod["metadata"]["labels"]
    assert not {"AWS_REGION", "AWS_DEFAULT_REGION"} & {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_locally_the_route_is_absent_even_when_switched_on() -> None:
    local = Target("local", SETTINGS.model_copy(update={"target": "local"}))
    text = gateway.config_text(local, tracing=False, **ON)
    assert route(yaml.safe_load(text)) is None
    assert "No `bedrock` route: Amazon Bedrock is an eks-only route" in text
    assert not deploy.bedrock_enabled(local, ON) and deploy.bedrock_enabled(Target("eks", SETTINGS), ON)


def test_on_eks_the_route_signs_with_pod_identity_and_names_no_key(eks: Target) -> None:
    config = gateway.gateway_config(eks, **ON)
    params = route(config)["litellm_params"]
    assert params == {"model": f"bedrock/converse/{MODEL}", "aws_region_name": REGION, "timeout": 60,
                      "max_retries": 0}, "no api_key, no aws_access_key_id: the credentials come from Pod Identity"
    fallbacks = {k: v for f in config["router_settings"]["fallbacks"] for k, v in f.items()}
    assert fallbacks == {"reasoning": ["vision", "bedrock"], "vision": ["reasoning"]}
    off = gateway.gateway_config(eks)
    assert [m for m in config["model_list"] if m["model_name"] != "bedrock"] == off["model_list"]


def test_on_eks_the_gateway_pods_run_as_the_associated_service_account(eks: Target) -> None:
    items = gateway.render(eks, overrides=ON, include_on_demand=True)
    assert manifests.check(items) == []
    account = next(i.doc for i in items if i.kind == "ServiceAccount" and i.name == "litellm")
    assert account["automountServiceAccountToken"] is False
    pod = gateway_pod(items)
    assert pod["spec"]["serviceAccountName"] == deploy.bedrock_parameters()["service_account"] == "litellm"
    assert pod["spec"]["automountServiceAccountToken"] is False, "Pod Identity injects its own token"
    assert pod["metadata"]["labels"][CALLS_AWS_LABEL] == "true"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == REGION
    assert not [k for k in env if k.startswith("AWS_") and k not in ("AWS_REGION", "AWS_DEFAULT_REGION")]
    # the agent's virtual key may use the route (its RAGAs judge)
    job = next(i.doc for i in items if i.kind == "Job")
    body = json.loads({e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
                      ["GENERATE_BODY"]["value"])
    assert body == gateway.agent_key_request(bedrock=True) and body["models"][-1] == "bedrock"


@pytest.mark.parametrize("flavour", manifests.FLAVOURS)
def test_prerequisites_hold_for_the_whole_flavour_with_the_route_on(flavour: str) -> None:
    t = Target("eks", SETTINGS, flavour=flavour)
    docs = [m.doc for m in t.render_all(overrides=ON, include_on_demand=True)]
    suite = run_checks(docs, flavour, flavour, REGION, settings=SETTINGS)
    assert suite.total == 0, {k: [f.message for f in v] for k, v in suite.findings.items() if v}
    wrong = [f for f in prerequisites(docs, flavour, "eu-west-1") if f.rule == "aws-region"]
    assert "Deployment/llm-workshop/litellm" in {f.object for f in wrong}, "it compares with the workshop's region"


def test_the_service_account_is_the_one_the_stack_associates(eks: Target) -> None:
    stack = deploy.bedrock_stack_parameters(SETTINGS)
    assert {p["ParameterKey"]: p["ParameterValue"] for p in stack} == {
        "ClusterName": "test-cluster", "Namespace": "llm-workshop", "ServiceAccountName": "litellm", "ModelId": MODEL}
    accounts = {i.name for i in gateway.render(eks, overrides=ON) if i.kind == "ServiceAccount"}
    assert "litellm" in accounts


# ---------------------------------------------------------------- the template: lint, checkov, least privilege


def test_the_template_passes_cfn_lint() -> None:
    if not Path(os.sys.executable).with_name("cfn-lint").exists():
        pytest.skip("cfn-lint is not installed in this environment")
    result = deploy.bedrock_lint()
    assert result.ok, result.findings


def test_least_privilege_holds() -> None:
    assert all(c.ok for c in deploy.bedrock_security_checks()), [c.as_row() for c in deploy.bedrock_security_checks()]
    assert deploy.bedrock_grants(REGION, MODEL) == [("bedrock:InvokeModel", MODEL_ARN),
                                                     ("bedrock:InvokeModelWithResponseStream", MODEL_ARN)]
    assert "::foundation-model/" in MODEL_ARN, "a foundation model's ARN carries no account id"


def _mutated(change) -> list[str]:  # noqa: ANN001 - a function that edits the template
    from helpers.layers.rag.deploy import load_template

    template = load_template(deploy.BEDROCK_TEMPLATE)
    change(template)
    return [c.check for c in deploy.bedrock_security_checks(template) if not c.ok]


def _statement(template: dict) -> dict:
    return template["Resources"]["GatewayRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]


@pytest.mark.parametrize("change, failing", [
    (lambda t: _statement(t).update(Action=["bedrock:*"]), "actions"),
    (lambda t: _statement(t)["Action"].append("bedrock:ListFoundationModels"), "actions"),
    (lambda t: _statement(t).update(Resource="*"), "resource"),
    (lambda t: _statement(t).update(Resource={"Fn::Sub": "arn:${AWS::Partition}:bedrock:*::foundation-model/*"}),
     "resource"),
    (lambda t: t["Resources"]["GatewayRole"]["Properties"].update(
        ManagedPolicyArns=["arn:aws:iam::aws:policy/AmazonBedrockFullAccess"]), "role: no managed"),
    (lambda t: t["Resources"]["GatewayRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0][
        "Condition"]["StringEquals"].pop("aws:RequestTag/kubernetes-service-account"), "role: trusted"),
    (lambda t: t["Resources"].pop("GatewayPodIdentity"), "Pod Identity association"),
])
def test_the_checks_catch_each_widening(change, failing: str) -> None:  # noqa: ANN001
    assert any(c.startswith(failing) for c in _mutated(change))


def test_checkov_finds_nothing_to_excuse(tmp_path: Path) -> None:
    from tests import test_checkov

    if not test_checkov.CHECKOV.exists():
        pytest.skip(".venvs/checkov is absent: `make checkov-env`")
    skips = test_checkov.skip_list()
    found = test_checkov.run_checkov("cloudformation", "-f", str(deploy.BEDROCK_TEMPLATE))
    assert found == [], "the template needs no entry in manifests/checkov-skips.yaml"
    manifests.write(gateway.render(Target("eks", SETTINGS), overrides=ON, include_on_demand=True), tmp_path)
    rendered = test_checkov.run_checkov("kubernetes", "-d", str(tmp_path))
    assert test_checkov.unjustified(rendered, skips) == []


# ---------------------------------------------------------------- the permission set against botocore and LiteLLM


def test_every_action_exists_in_botocores_bedrock_runtime_model() -> None:
    services = deploy.iam_action_services()
    assert services == {a: ["bedrock-runtime"] for a in deploy.BEDROCK_ACTIONS}
    assert deploy.iam_action_services(("bedrock:InvokeModelEverywhere",)) == {"bedrock:InvokeModelEverywhere": []}
    # the role's actions are the template's: nothing else granted, nothing missing
    assert sorted({a for a, _ in deploy.bedrock_grants(REGION, MODEL)}) == sorted(deploy.BEDROCK_ACTIONS)


def test_operations_map_to_the_actions_their_documentation_names() -> None:
    base = f"https://bedrock-runtime.{REGION}.amazonaws.com/model/{MODEL.replace(':', '%3A')}"
    assert deploy.operation_for_request("POST", f"{base}/converse") == "Converse"
    assert deploy.operation_for_request("POST", f"{base}/converse-stream") == "ConverseStream"
    assert deploy.operation_for_request("POST", f"{base}/invoke") == "InvokeModel"
    assert deploy.operation_for_request("GET", f"{base}/converse") is None
    assert deploy.required_action("Converse") == "bedrock:InvokeModel"
    assert deploy.required_action("ConverseStream") == "bedrock:InvokeModelWithResponseStream"


CAPTURE = textwrap.dedent("""
    import asyncio, json, os, sys
    import litellm
    from litellm.llms.custom_httpx import http_handler

    seen = []

    def record(self, url, *args, **kwargs):
        headers = {k.lower() for k in (kwargs.get("headers") or {})}
        seen.append({"method": "POST", "url": str(url), "signed": "authorization" in headers})
        raise RuntimeError("recorded: this request never leaves the process")

    async def arecord(self, url, *args, **kwargs):
        return record(self, url, *args, **kwargs)

    http_handler.HTTPHandler.post = record
    http_handler.AsyncHTTPHandler.post = arecord
    params = json.loads(sys.argv[1])
    messages = [{"role": "user", "content": "Is this context relevant to the question? Answer yes or no."}]
    for stream in (False, True):
        for call in (lambda: litellm.completion(messages=messages, stream=stream, **params),
                     lambda: asyncio.run(litellm.acompletion(messages=messages, stream=stream, **params))):
            try:
                call()
            except Exception:
                pass
    print(json.dumps(seen))
""")


@needs_proxy
def test_litellms_calls_for_the_route_need_exactly_the_granted_actions(eks: Target) -> None:
    """The proxy's own LiteLLM, given the rendered route's litellm_params, completes (sync and async, streamed or
    not): every request it would send maps to a bedrock-runtime operation whose IAM action the role grants, and
    together they need exactly the role's two actions."""
    params = route(gateway.gateway_config(eks, **ON))["litellm_params"]
    env = {"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
           "AWS_SECRET_ACCESS_KEY": "not-a-secret", "AWS_REGION": REGION, "HOME": "/tmp"}
    run = subprocess.run([str(gateway_local.PROXY_VENV / "bin" / "python"), "-c", CAPTURE, json.dumps(params)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    requests = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(requests) == 4 and all(r["signed"] for r in requests), "SigV4-signed, sync and async, both modes"
    assert {urlsplit(r["url"]).netloc for r in requests} == {f"bedrock-runtime.{REGION}.amazonaws.com"}
    rows = deploy.permission_rows(requests, deploy.bedrock_grants(REGION, MODEL))
    assert {r["operation"] for r in rows} == {"Converse", "ConverseStream"}
    assert {r["IAM action"] for r in rows} == set(deploy.BEDROCK_ACTIONS), "needed = granted, no more, no less"
    assert all(r["granted"] == "✔" for r in rows)
    assert all(f"/model/{MODEL}/" in r["request"] for r in rows), "the model id of the role's one ARN"


# ---------------------------------------------------------------- plan, deploy, check, delete


def test_the_plan_is_offline_and_names_the_stack_teardown_removes(eks: Target) -> None:
    plan = deploy.bedrock_plan(eks)
    assert plan.stack == "test-cluster-gateway-bedrock" and plan.region == REGION
    assert (plan.stack, "manifests/04-gateway/cloudformation/gateway-bedrock.yaml") in \
        teardown.cloudformation_stacks(SETTINGS)
    assert plan.request["Capabilities"] == ["CAPABILITY_IAM"] and plan.request["OnFailure"] == "DELETE"
    assert plan.grants == (("bedrock:InvokeModel", MODEL_ARN), ("bedrock:InvokeModelWithResponseStream", MODEL_ARN))
    assert [r["resource"] for r in plan.rows()] == [MODEL_ARN, MODEL_ARN]


def test_dry_run_calls_no_aws(eks: Target) -> None:
    class Untouchable:
        def __getattr__(self, name: str):  # noqa: ANN204
            raise AssertionError(f"dry run called cloudformation.{name}")

    planned = deploy.deploy_bedrock(eks, cloudformation=Untouchable(), dry_run=True)
    assert planned["dry_run"] is True and planned["StackName"] == "test-cluster-gateway-bedrock"


def test_deploy_sends_the_template_and_reads_the_outputs(eks: Target) -> None:
    cfn = client("cloudformation")
    outputs = [{"OutputKey": "GatewayRoleArn", "OutputValue": "arn:aws:iam::123456789012:role/x"},
               {"OutputKey": "ModelArn", "OutputValue": MODEL_ARN}]
    with Stubber(cfn) as stub:
        stub.add_response("create_stack", {"StackId": "arn:aws:cloudformation:us-west-2:123456789012:stack/s/1"}, {
            "StackName": "test-cluster-gateway-bedrock", "TemplateBody": deploy.BEDROCK_TEMPLATE.read_text(),
            "Parameters": deploy.bedrock_stack_parameters(SETTINGS), "Capabilities": ["CAPABILITY_IAM"],
            "OnFailure": "DELETE", "Tags": ANY})
        stub.add_response("describe_stacks", {"Stacks": [{
            "StackName": "test-cluster-gateway-bedrock", "CreationTime": "2026-12-06T00:00:00Z",
            "StackStatus": "CREATE_COMPLETE", "Outputs": outputs}]}, {"StackName": "test-cluster-gateway-bedrock"})
        found = deploy.deploy_bedrock(eks, cloudformation=cfn, wait=False)
        stub.assert_no_pending_responses()
    assert found["ModelArn"] == MODEL_ARN


def test_delete_removes_the_stack(eks: Target) -> None:
    cfn = client("cloudformation")
    with Stubber(cfn) as stub:
        stub.add_response("delete_stack", {}, {"StackName": "test-cluster-gateway-bedrock"})
        assert deploy.delete_bedrock(eks, cloudformation=cfn, wait=False) == "test-cluster-gateway-bedrock"


def _model(status: str, inference: list[str], arn: str = MODEL_ARN) -> dict:
    return {"modelDetails": {"modelArn": arn, "modelId": MODEL, "providerName": "Qwen",
                             "inferenceTypesSupported": inference, "modelLifecycle": {"status": status}}}


def test_the_model_check_asks_bedrock_for_an_active_on_demand_model(eks: Target) -> None:
    bedrock = client("bedrock")
    with Stubber(bedrock) as stub:
        stub.add_response("get_foundation_model", _model("ACTIVE", ["ON_DEMAND"]), {"modelIdentifier": MODEL})
        found = deploy.bedrock_model_check(eks, bedrock=bedrock)
    assert found["arn"] == MODEL_ARN and found["lifecycle"] == "ACTIVE"
    for status, inference in (("LEGACY", ["ON_DEMAND"]), ("ACTIVE", ["INFERENCE_PROFILE"])):
        with Stubber(bedrock) as stub, pytest.raises(WorkshopError, match="bedrock.model_id"):
            stub.add_response("get_foundation_model", _model(status, inference), {"modelIdentifier": MODEL})
            deploy.bedrock_model_check(eks, bedrock=bedrock)


def test_the_routes_table_shows_the_route_as_eks_only(eks: Target) -> None:
    local = Target("local", SETTINGS.model_copy(update={"target": "local"}))
    rows = {r["route"]: r for r in gateway.routes_table(local, eks, **ON)}
    assert rows["bedrock"]["eks backend"] == f"bedrock/converse/{MODEL} ({REGION})"
    assert rows["bedrock"]["local backend"] == "none: eks only"
    assert "bedrock" not in {r["route"] for r in gateway.routes_table(local, eks)}
