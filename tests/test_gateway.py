"""The LiteLLM gateway: one config for both targets, its manifests, and the real proxy (guardrail, keys, routes)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator

import openai
import pytest
import requests
import yaml

from helpers import config
from helpers.infra import manifests as m
from helpers.layers import gateway
from helpers.layers.gateway import local as gateway_local
from helpers.local import stack
from helpers.target import Target
from services.gateway.gateway_hooks import find_pii, mask_pii
from tests.conftest import free_port

needs_proxy = pytest.mark.skipif(
    not gateway.proxy_installed(),
    reason=f"the gateway's environment {gateway_local.PROXY_VENV} does not exist; create it with: "
           f"{gateway_local.INSTALL_COMMANDS}",
)


# ---------------------------------------------------------------- one configuration, both targets


@pytest.fixture
def gateway_settings(isolated_settings: config.Settings, monkeypatch: pytest.MonkeyPatch) -> config.Settings:
    """isolated_settings plus free ports for the gateway and its Redis."""
    monkeypatch.setenv("WORKSHOP_GATEWAY_PORT", str(free_port()))
    monkeypatch.setenv("WORKSHOP_REDIS_PORT", str(free_port()))
    monkeypatch.setenv("WORKSHOP_SERVE_PORT", str(free_port()))
    return config.reload_settings()


@pytest.fixture
def local_t(gateway_settings: config.Settings) -> Target:
    """The local target on the isolated settings."""
    return Target("local", gateway_settings)


@pytest.fixture
def eks_t(gateway_settings: config.Settings) -> Target:
    """The eks target on the same settings (rendering only: nothing here reaches a cluster)."""
    return Target("eks", gateway_settings)


def test_config_is_identical_for_both_targets_apart_from_endpoints(local_t: Target, eks_t: Target) -> None:
    # tracing (chapter 05) names a different callback per target (otel vs langfuse_otel): compared with it off here,
    # and on in test_tracing.py
    local = gateway.gateway_config(local_t, tracing=False, local={"cache": "redis"})
    eks = gateway.gateway_config(eks_t, tracing=False)
    assert gateway.config_without_endpoints(local) == gateway.config_without_endpoints(eks)
    assert [r["model_name"] for r in eks["model_list"]] == list(gateway.ROUTES)
    assert eks["litellm_settings"]["cache_params"]["type"] == "redis"
    assert eks["guardrails"][0]["litellm_params"]["default_on"] is True


def test_local_endpoints_come_from_the_settings(gateway_settings: config.Settings, local_t: Target,
                                                eks_t: Target) -> None:
    local = gateway.gateway_config(local_t)
    bases = {r["model_name"]: r["litellm_params"]["api_base"] for r in local["model_list"]}
    assert bases["reasoning"] == gateway_settings.model_server_url == local_t.chat.base_url
    assert bases["embedding"] == stack.get_service("ray-serve").url(gateway_settings) == local_t.embeddings.base_url
    assert bases["vision"].endswith(":0/v1"), "no local vision model: its route must fail at once"
    cache = local["litellm_settings"]["cache_params"]
    assert cache["type"] == gateway.cache_backend()
    if cache["type"] == "redis":
        assert (cache["host"], cache["port"]) == (gateway_settings.host, gateway_settings.redis_port)
    eks = gateway.gateway_config(eks_t)
    assert {r["litellm_params"]["api_base"] for r in eks["model_list"]} == {
        f"http://vllm-reasoning.{gateway_settings.namespace}.svc:8000/v1",
        f"http://vllm-vision.{gateway_settings.namespace}.svc:8000/v1",
        f"http://ray-serve-serve-svc.{gateway_settings.namespace}.svc:8000/v1",
    }
    assert eks["general_settings"]["database_url"] == "os.environ/DATABASE_URL"


def test_written_config_holds_no_secret(gateway_settings: config.Settings) -> None:
    path = gateway.write_local_config(gateway_settings)
    text = path.read_text()
    for secret in (gateway_settings.gateway_master_key, gateway_settings.model_server_api_key):
        assert secret.get_secret_value() not in text
    assert "os.environ/LITELLM_MASTER_KEY" in text
    assert (path.parent / "gateway_hooks.py").read_text() == gateway_local.HOOKS_FILE.read_text()


def test_configmap_carries_the_same_config_and_hooks(eks_t: Target) -> None:
    items = gateway.render(eks_t)
    cm = next(i.doc for i in items if i.kind == "ConfigMap")
    assert cm["data"]["config.yaml"] == gateway.config_text(eks_t)
    assert cm["data"]["gateway_hooks.py"] == gateway_local.HOOKS_FILE.read_text()


@pytest.mark.parametrize("target", m.TARGETS)
def test_manifests_pass_validation_and_policy(target: str, isolated_settings: config.Settings) -> None:
    items = gateway.render(Target(target, isolated_settings), include_on_demand=True)
    assert m.check(items) == []
    kinds = {i.kind for i in items}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Ingress", "Job"} <= kinds
    images = [c["image"] for i in items for _, spec in m.pod_specs(i.doc) for c in spec["containers"]]
    assert "ghcr.io/berriai/litellm:v1.108.7" in images
    ingress = next(i.doc for i in items if i.kind == "Ingress")
    assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/scheme"] == "internal"


def test_internet_facing_ingress_needs_tls(eks_t: Target) -> None:
    public = gateway.render(eks_t, overrides={"ingress": {"scheme": "internet-facing"}})
    assert {f.rule for f in m.check(public)} == {"no-public-plaintext-lb"}
    arn = "arn:aws:acm:us-west-2:123456789012:certificate/0000"
    tls = gateway.render(eks_t, overrides={"ingress": {"scheme": "internet-facing", "certificate_arn": arn,
                                                       "host": "gateway.example.com"}})
    assert m.check(tls) == []


def test_agent_key_job_sends_the_budget_and_rate_limits(eks_t: Target) -> None:
    job = next(i.doc for i in gateway.render(eks_t, include_on_demand=True) if i.kind == "Job")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    body = json.loads(env["GENERATE_BODY"]["value"])
    assert body == gateway.agent_key_request()
    assert body["max_budget"] > 0 and body["rpm_limit"] > 0 and body["tpm_limit"] > 0
    assert "valueFrom" in env["LITELLM_MASTER_KEY"], "the master key comes from the Secret"


def test_secret_objects_are_generated_and_kept(isolated_settings: config.Settings) -> None:
    first = {o["metadata"]["name"]: o["stringData"] for o in gateway.secret_objects("ns", isolated_settings)}
    assert first["litellm-postgres"]["POSTGRES_PASSWORD"] in first["litellm-secrets"]["DATABASE_URL"]
    again = {o["metadata"]["name"]: o["stringData"]
             for o in gateway.secret_objects("ns", isolated_settings, existing=first)}
    assert again == first, "re-running keeps the generated passwords"


# ---------------------------------------------------------------- the guardrail's patterns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+work@example.co.uk today", "write to [EMAIL] today"),
        ("call (555) 123-4567", "call [PHONE]"),
        ("call 555.123.4567 or +1 555 123 4567", "call [PHONE] or [PHONE]"),
        ("London office +44 20 7946 0958", "London office [PHONE]"),
        ("SSN 123-45-6789", "SSN [US_SSN]"),
        ("SSN 123 45 6789", "SSN [US_SSN]"),
    ],
)
def test_patterns_mask_pii(text: str, expected: str) -> None:
    assert mask_pii(text) == expected
    assert find_pii(text)


@pytest.mark.parametrize(
    "text",
    ["LiteLLM 1.108.7 on port 18084", "date 2026-01-15 at 10:30", "000-12-3456 is not an SSN", "order 12345678",
     "Kubernetes v1.36, 4 GPUs x 24 GiB", "see https://example.com/docs"],
)
def test_patterns_leave_clean_text_alone(text: str) -> None:
    assert mask_pii(text) == text
    assert find_pii(text) == {}


@needs_proxy
@pytest.mark.parametrize("action", ["mask", "reject"])
def test_guardrail_class_in_the_gateway_environment(action: str) -> None:
    """The class the proxy loads, run in the proxy's own environment: masks in place, or refuses with 400."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(gateway_local.HOOKS_FILE.parent)!r})
        from fastapi import HTTPException
        from gateway_hooks import PiiGuardrail
        guard = PiiGuardrail(pii_action={action!r}, guardrail_name="pii", event_hook="pre_call", default_on=True)
        data = {{"messages": [{{"role": "user", "content": [{{"type": "text", "text": "mail a@b.io, SSN 123-45-6789"}}]}}],
                "input": ["call (555) 123-4567"]}}
        try:
            out = asyncio.run(guard.async_pre_call_hook(None, None, data, "completion"))
            print(json.dumps({{"ok": out}}))
        except HTTPException as e:
            print(json.dumps({{"status": e.status_code, "detail": e.detail}}))
    """)
    run = subprocess.run([str(gateway_local.PROXY_VENV / "bin" / "python"), "-c", script], capture_output=True, text=True,
                         env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if action == "mask":
        data = result["ok"]
        assert data["messages"][0]["content"][0]["text"] == "mail [EMAIL], SSN [US_SSN]"
        assert data["input"] == ["call [PHONE]"]
    else:
        assert result["status"] == 400
        assert "1 EMAIL" in result["detail"]["error"] and "a@b.io" not in result["detail"]["error"]


# ---------------------------------------------------------------- through the real proxy


@pytest.fixture(scope="module")
def running_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The real local stack (model server, Ray Serve, Redis if installed, the LiteLLM proxy) in its own state
    folder and ports, as a local Target.

    Module-scoped, so the proxy starts once for these tests: the same isolation as the isolated_settings
    fixture, plus the gateway's and Redis's ports.
    """
    if not gateway.proxy_installed():
        pytest.skip(f"the gateway's environment {gateway_local.PROXY_VENV} does not exist; create it with: "
                    f"{gateway_local.INSTALL_COMMANDS}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKSHOP_STATE_DIR", str(tmp_path_factory.mktemp("gateway") / "state"))
        for setting in ("MODEL_SERVER_PORT", "EMBEDDING_SERVER_PORT", "SERVE_PORT", "GATEWAY_PORT", "REDIS_PORT",
                        "PHOENIX_PORT"):
            mp.setenv(f"WORKSHOP_{setting}", str(free_port()))
        settings = config.reload_settings()
        try:
            stack.ensure("gateway")
            yield Target("local", settings)
        finally:
            stack.down()
    config.reload_settings()


def direct_prompt_tokens(t: Target, text: str) -> int:
    """Prompt tokens the chat model counts for a text, asked directly (no gateway)."""
    reply = t.chat.client().chat.completions.create(model=t.chat.model, max_tokens=1, temperature=0,
                                                    messages=[{"role": "user", "content": text}])
    return reply.usage.prompt_tokens


NO_CACHE = {"cache": {"no-cache": True}}


@needs_proxy
@pytest.mark.services
@pytest.mark.parametrize(
    ("sent", "model_sees"),
    [
        ("My e-mail is jane.doe@example.com.", "My e-mail is [EMAIL]."),
        ("Call me on (555) 123-4567 or +44 20 7946 0958.", "Call me on [PHONE] or [PHONE]."),
        ("My SSN is 123-45-6789.", "My SSN is [US_SSN]."),
        ("How many replicas does a Deployment run by default?", "How many replicas does a Deployment run by default?"),
    ],
    ids=["email", "phones", "ssn", "clean"],
)
def test_guardrail_masks_pii_before_the_model_and_passes_clean_text(running_gateway, sent, model_sees) -> None:
    """The model counts exactly the tokens of the masked text (and of the unchanged text when it is clean)."""
    reply = running_gateway.gateway.client().chat.completions.create(
        model="reasoning", max_tokens=1, temperature=0, messages=[{"role": "user", "content": sent}],
        extra_body=NO_CACHE)
    assert reply.usage.prompt_tokens == direct_prompt_tokens(running_gateway, model_sees)
    if sent != model_sees:
        assert reply.usage.prompt_tokens != direct_prompt_tokens(running_gateway, sent)


@needs_proxy
@pytest.mark.services
def test_guardrail_masks_embedding_inputs(running_gateway) -> None:
    through = running_gateway.gateway.client().embeddings.create(model="embedding",
                                                                 input=["reach me at bob@example.org"])
    direct = running_gateway.embeddings  # the Ray Serve app behind the gateway's embedding route
    masked = direct.client().embeddings.create(model=direct.model, input=["reach me at [EMAIL]"])
    assert through.data[0].embedding == pytest.approx(masked.data[0].embedding, abs=1e-5)


@needs_proxy
@pytest.mark.services
@pytest.mark.parametrize("key", ["sk-wrong-key", "not-even-an-sk-key"])
def test_wrong_key_gets_401(running_gateway, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as error:
        openai.OpenAI(base_url=running_gateway.gateway.base_url, api_key=key).chat.completions.create(
            model="reasoning", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 401


@needs_proxy
@pytest.mark.services
def test_missing_key_gets_401(running_gateway) -> None:
    answer = requests.post(running_gateway.gateway.base_url + "/chat/completions", timeout=30,
                           json={"model": "reasoning", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 401
    assert "invalid or missing API key" in answer.json()["error"]["message"]


@needs_proxy
@pytest.mark.services
def test_master_key_is_accepted_and_lists_the_routes(running_gateway) -> None:
    names = {m.id for m in running_gateway.gateway.client().models.list()}
    assert names == set(gateway.ROUTES)


@needs_proxy
@pytest.mark.services
def test_unknown_model_gets_a_clear_error(running_gateway) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        running_gateway.gateway.client().chat.completions.create(model="gpt-9", max_tokens=1,
                                                                 messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 400
    assert "Invalid model name passed in model=gpt-9" in error.value.message
    assert "/v1/models" in error.value.message


@needs_proxy
@pytest.mark.services
def test_failing_backend_falls_back(running_gateway) -> None:
    """Locally nothing serves `vision`: the call fails at the backend for real and the router falls back."""
    raw = running_gateway.gateway.client().chat.completions.with_raw_response.create(
        model="vision", max_tokens=2, messages=[{"role": "user", "content": "Say OK."}], extra_body=NO_CACHE)
    headers = gateway.response_headers(raw)
    assert headers["x-litellm-attempted-fallbacks"] == "1"
    assert headers["x-litellm-model-group"] == "reasoning"
    assert raw.parse().choices[0].message.content is not None


@needs_proxy
@pytest.mark.services
def test_repeated_request_is_served_from_the_cache(running_gateway) -> None:
    client = running_gateway.gateway.client()
    ask = {"model": "reasoning", "max_tokens": 4, "temperature": 0,
           "messages": [{"role": "user", "content": "Name one Kubernetes object. One word."}]}
    first = client.chat.completions.with_raw_response.create(**ask)
    second = client.chat.completions.with_raw_response.create(**ask)
    assert "x-litellm-cache-key" not in first.headers
    assert "x-litellm-cache-key" in second.headers
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content


@needs_proxy
@pytest.mark.services
def test_status_reports_the_gateway_and_its_cache(running_gateway) -> None:
    states = {s.name: s.state for s in stack.status()}
    assert states["gateway"] == "healthy"
    if gateway.cache_backend() == "redis":
        assert states["redis"] == "healthy"
    text = yaml.safe_load(gateway.write_local_config(running_gateway.settings).read_text())
    assert text["litellm_settings"]["cache_params"]["type"] == gateway.cache_backend()
