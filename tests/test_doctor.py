"""Tests for helpers.local.doctor: structure of the local checks, port ownership, offline eks checks, quota calls."""

from __future__ import annotations

import ipaddress
import platform
import socket
import time
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from helpers import config
from helpers.local import doctor
from helpers.target import Target, TargetError

AWS_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "WORKSHOP_AWS_REGION",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    """monkeypatch, with the workshop settings re-read after the test restored the environment."""
    yield monkeypatch
    monkeypatch.undo()
    config.reload_settings()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuse (and record) every connection or name lookup that would leave this machine."""
    attempts: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def local(address: object) -> bool:
        if not isinstance(address, tuple):
            return True  # unix sockets
        try:
            return ipaddress.ip_address(address[0]).is_loopback
        except ValueError:
            return address[0] == "localhost"

    def connect(self: socket.socket, address: object) -> None:
        if not local(address):
            attempts.append(address)
            raise OSError("network disabled in tests")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not local(address):
            attempts.append(address)
            raise OSError("network disabled in tests")
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object):
        if host not in (None, "localhost") and not (isinstance(host, str) and local((host, 0))):
            attempts.append(host)
            raise socket.gaierror("name lookups disabled in tests")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_local_checks_structure() -> None:
    checks = doctor.local_checks()
    assert checks and all(isinstance(c, doctor.Check) for c in checks)
    names = [c.name for c in checks]
    for expected in ("python", "disk space", "memory", "cpu count", "cpu features", "llama_cpp", "secrets (.env)"):
        assert expected in names
    assert sum(n.startswith("port ") for n in names) >= 2
    assert any(n.startswith("model ") for n in names)
    for c in checks:
        assert c.level in ("error", "warning")
        assert isinstance(c.ok, bool) and c.detail
        if not c.ok:
            assert c.fix, f"{c.name} failed without a fix"


def test_report_hides_paths_and_secrets() -> None:
    checks = doctor.local_checks()
    text = doctor.report(checks)
    page = doctor.to_html(checks)
    settings = config.get_settings()
    for out in (text, page):
        assert str(config.ROOT) not in out
        assert str(Path.home()) + "/" not in out
        for field in ("gateway_master_key", "model_server_api_key", "serve_api_key"):
            secret = getattr(settings, field)
            if secret is not None:
                assert secret.get_secret_value() not in out
    for check in checks:
        assert check.symbol in text
        if not check.ok and check.fix:
            assert "fix: " + check.fix in text


def test_port_held_by_foreign_process(env: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        env.setenv("WORKSHOP_MODEL_SERVER_PORT", str(port))
        config.reload_settings()
        checks = {c.name: c for c in doctor.local_checks()}
    check = checks[f"port {port} (model-server)"]
    assert not check.ok and check.level == "error"
    assert "another program" in check.detail
    assert "WORKSHOP_MODEL_SERVER_PORT=" in check.fix
    assert "/tmp/" not in check.detail  # the owner's command line is shown without machine paths


def test_eks_checks_without_credentials(env: pytest.MonkeyPatch, tmp_path: Path, no_network: list[object],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in AWS_ENV:
        env.delenv(name, raising=False)
    (tmp_path / "config").write_text("")
    (tmp_path / "credentials").write_text("")
    env.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    env.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    config.reload_settings()

    started = time.monotonic()
    checks = {c.name: c for c in doctor.eks_checks()}
    assert time.monotonic() - started < 15

    identity = checks["aws identity"]
    assert not identity.ok and identity.level == "error"
    assert "aws configure" in identity.fix and "aws sso login" in identity.fix
    region = checks["aws region"]
    assert not region.ok and "AWS_REGION" in region.fix
    kube = checks["kube context"]
    assert not kube.ok and "aws eks update-kubeconfig --name" in kube.fix
    gpu = checks["quota G and VT vCPUs"]
    assert not gpu.ok and gpu.level == "error"
    assert "servicequotas/home/services/ec2/quotas/L-DB2E81BA" in gpu.fix
    assert not checks["quota Inf vCPUs"].ok and checks["quota Inf vCPUs"].level == "warning"
    for check in checks.values():
        if not check.ok:
            assert check.fix
        assert str(tmp_path) not in check.detail + check.fix
    assert no_network == [], f"tried to reach the network: {no_network}"

    assert doctor.main(["--target", "eks"]) == 1
    out = capsys.readouterr().out
    assert "✘" in out and "fix: " in out


def _quotas_client() -> object:
    return boto3.client("service-quotas", region_name="us-west-2", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _quota_response(quota: doctor.Quota, value: float) -> dict[str, object]:
    return {"Quota": {"ServiceCode": quota.service_code, "QuotaCode": quota.quota_code,
                      "QuotaName": quota.name, "Value": value, "Unit": "None"}}


def test_quota_parameters_match_the_service_model(no_network: list[object]) -> None:
    client = _quotas_client()
    shape = client.meta.service_model.operation_model("GetServiceQuota").input_shape
    codes = {q.quota_code for q in doctor.QUOTAS}
    assert {"L-DB2E81BA", "L-1945791B"} <= codes
    for quota in doctor.QUOTAS:
        params = {"ServiceCode": quota.service_code, "QuotaCode": quota.quota_code}
        validate_parameters(params, shape)  # raises ParamValidationError on a wrong name or type
        with Stubber(client) as stubber:
            stubber.add_response("get_service_quota", _quota_response(quota, 96.0), params)
            check = doctor.quota_check(client, quota, "us-west-2")
            stubber.assert_no_pending_responses()
        assert check.ok and "96 vCPUs" in check.detail
    assert no_network == []


def test_quota_too_low_and_default_fallback(no_network: list[object]) -> None:
    client = _quotas_client()
    gpu = next(q for q in doctor.QUOTAS if q.quota_code == "L-DB2E81BA")
    params = {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"}
    with Stubber(client) as stubber:
        stubber.add_response("get_service_quota", _quota_response(gpu, 0.0), params)
        low = doctor.quota_check(client, gpu, "us-west-2")
        stubber.add_client_error("get_service_quota", "NoSuchResourceException", expected_params=params)
        stubber.add_response("get_aws_default_service_quota", _quota_response(gpu, 64.0), params)
        default = doctor.quota_check(client, gpu, "us-west-2")
        stubber.add_client_error("get_service_quota", "AccessDeniedException", expected_params=params)
        denied = doctor.quota_check(client, gpu, "us-west-2")
        stubber.assert_no_pending_responses()
    assert not low.ok and low.level == "error"
    assert "request-service-quota-increase" in low.fix and "--desired-value 48" in low.fix
    assert gpu.console_url("us-west-2") in low.fix
    assert default.ok and "64 vCPUs" in default.detail
    assert not denied.ok and denied.fix
    assert no_network == []


# A /proc/cpuinfo as Linux writes it on x86 (abridged): the first processor's `flags` line counts, not `vmx flags`,
# not the `bugs`, not a later processor's line.
X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor @ 2.60GHz
fpu\t\t: yes
flags\t\t: fpu sse sse2 avx avx2 fma f16c amx_tile
vmx flags\t: vnmi preemption_timer
bugs\t\t: spectre_v1
power management:

processor\t: 1
flags\t\t: fpu avx512f
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp
CPU implementer\t: 0x41
"""


def test_cpuinfo_parsing() -> None:
    assert doctor.parse_linux_cpuinfo(X86_CPUINFO) == {"fpu", "sse", "sse2", "avx", "avx2", "fma", "f16c", "amx_tile"}
    # Linux calls the Armv8.2 dot product `asimddp`; the check looks for `dotprod`, so both are there
    assert doctor.parse_linux_cpuinfo(ARM_CPUINFO) == {
        "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "asimddp", "dotprod"}
    assert doctor.parse_linux_cpuinfo("") == set()
    assert doctor.parse_linux_cpuinfo("processor\t: 0\nmodel name\t: a CPU: with colons\n") == set()


def test_cpu_features_of_this_machine() -> None:
    arch, feats = doctor.cpu_features()
    machine = platform.machine().lower()
    expected = {"amd64": "x86_64", "x86_64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
    assert arch == expected.get(machine, machine)
    if platform.system() == "Linux":
        assert feats == doctor.parse_linux_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
        assert feats, "/proc/cpuinfo lists this CPU's features"
        baseline = {"x86_64": "sse2", "arm64": "asimd"}  # every CPU of these architectures has it
        if arch in baseline:
            assert baseline[arch] in feats


def test_display_path() -> None:
    assert doctor.display_path(config.ROOT / ".env") == ".env"
    assert doctor.display_path(Path.home() / ".cache" / "x") == "~/.cache/x"
    assert doctor.display_path("/srv/data/models") == "…/models"
    assert doctor.display_path("/proc/cpuinfo") == "/proc/cpuinfo"


def test_show_prints_outside_jupyter(capsys: pytest.CaptureFixture[str]) -> None:
    checks = [doctor.Check("a <b>", True, "fine"), doctor.Check("c", False, "bad", "do x", level="warning")]
    doctor.show(checks)
    out = capsys.readouterr().out
    assert "✔  a <b>" in out and "!  c" in out and "fix: do x" in out
    assert "a &lt;b&gt;" in doctor.to_html(checks)
    checks = doctor.run(Target("local", config.get_settings()))
    assert checks and {c.name for c in checks} >= {"python", "settings", "cpu features", "secrets (.env)"}
    assert not any(c.name.startswith("aws ") for c in checks), "the local target runs the local checks only"
    with pytest.raises(TargetError, match="TARGET must be 'local' or 'eks'") as raised:
        doctor.run(Target("mars"))
    assert raised.value.fix
    with pytest.raises(SystemExit):
        doctor.main(["--target", "mars"])
