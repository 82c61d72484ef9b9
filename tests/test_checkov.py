"""checkov (pinned, in its own venv .venvs/checkov) on the OpenSearch CloudFormation template and on every rendered
manifest of both flavours, offline: every finding is fixed or listed with its reason in manifests/checkov-skips.yaml.

Not marked: `make test` runs it with the unit tests (and builds .venvs/checkov first, `make checkov-env`); without
that venv the checkov runs are skipped with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.config import Settings
from helpers.infra import manifests as m

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import pins  # noqa: E402

CHECKOV = ROOT / ".venvs" / "checkov" / "bin" / "checkov"
SKIPS = ROOT / "manifests" / "checkov-skips.yaml"
TEMPLATE = ROOT / "manifests" / "06-vector-index" / "cloudformation" / "opensearch-domain.yaml"
SETTINGS = Settings(_env_file=None, target="eks", cluster_name="test-cluster", namespace="llm-workshop",
                    aws_region="us-west-2")
OFFLINE = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}  # no platform, no PyPI check
needs_checkov = pytest.mark.skipif(not CHECKOV.exists(), reason=".venvs/checkov is absent: `make checkov-env` "
                                   "installs the pinned checkov (requirements/checkov.txt)")

Finding = tuple[str, str, str]  # (framework, check id, resource)


def skip_list() -> dict[str, dict[str, dict]]:
    """manifests/checkov-skips.yaml: framework -> check id -> {reason, resources}."""
    return yaml.safe_load(SKIPS.read_text())


def justified(finding: Finding, skips: dict[str, dict[str, dict]]) -> bool:
    """Whether the skip list names this check for this resource (Kind.namespace.name prefix, or '*')."""
    framework, check, resource = finding
    entry = (skips.get(framework) or {}).get(check)
    if not entry or not str(entry.get("reason", "")).strip():
        return False
    return any(r == "*" or resource == r or resource.startswith(r + ".") for r in entry.get("resources") or [])


def unjustified(findings: list[Finding], skips: dict[str, dict[str, dict]]) -> list[Finding]:
    """The findings the skip list does not cover."""
    return [f for f in findings if not justified(f, skips)]


def stale(findings: list[Finding], skips: dict[str, dict[str, dict]]) -> list[str]:
    """Skip-list entries (framework, check, resource) that no finding uses any more."""
    def used(framework: str, check: str, resource: str) -> bool:
        return any(f[0] == framework and f[1] == check and (resource == "*" or f[2] == resource
                                                            or f[2].startswith(resource + ".")) for f in findings)

    return [f"{framework} {check} {resource}" for framework, checks in skips.items()
            for check, entry in checks.items() for resource in entry.get("resources") or []
            if not used(framework, check, resource)]


def run_checkov(framework: str, *target: str) -> list[Finding]:
    """checkov's failed checks for a file (-f) or folder (-d), offline, as (framework, check id, resource)."""
    env = {**os.environ, **OFFLINE}
    proc = subprocess.run([str(CHECKOV), "--skip-download", "--quiet", "-o", "json", "--framework", framework,
                           *target], capture_output=True, text=True, env=env, timeout=600)
    assert proc.stdout.strip(), f"checkov printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    for report in reports:
        if "summary" in report:
            assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return [(framework, f["check_id"], f["resource"]) for report in reports
            for f in (report.get("results") or {}).get("failed_checks", [])]


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Finding]]:
    """checkov's findings on the CloudFormation template and on each flavour's rendered manifests."""
    if not CHECKOV.exists():
        pytest.skip(".venvs/checkov is absent: `make checkov-env` installs the pinned checkov")
    out = {"cloudformation": run_checkov("cloudformation", "-f", str(TEMPLATE))}
    for flavour in m.FLAVOURS:
        folder = tmp_path_factory.mktemp(flavour)
        m.write(m.render("eks", flavour, include_on_demand=True, settings=SETTINGS), folder)
        out[flavour] = run_checkov("kubernetes", "-d", str(folder))
    return out


# ---------------------------------------------------------------- the skip list itself (no checkov needed)


def test_checkov_is_pinned_in_its_own_environment() -> None:
    own = pins.parse_pins((ROOT / "requirements" / "checkov.txt").read_text().splitlines())
    assert own.get("checkov") == "3.3.30"
    assert "checkov" not in pins.lock_pins(), "checkov's dependency set stays out of the workshop's environment"
    assert "checkov-env:" in (ROOT / "Makefile").read_text()


def test_every_skip_has_a_reason_and_names_its_resources() -> None:
    skips = skip_list()
    assert set(skips) == {"kubernetes", "cloudformation"}
    for framework, checks in skips.items():
        for check, entry in checks.items():
            assert check.startswith(("CKV_", "CKV2_")), check
            assert len(str(entry.get("reason", "")).split()) >= 8, f"{framework} {check}: give the reason"
            assert entry.get("resources"), f"{framework} {check}: name the resources (or '*')"


def test_a_finding_missing_from_the_skip_list_is_unjustified() -> None:
    skips = skip_list()
    assert justified(("kubernetes", "CKV_K8S_43", "Deployment.llm-workshop.litellm"), skips)
    assert justified(("kubernetes", "CKV2_K8S_6", "Pod.llm-workshop.litellm.app.kubernetes.io/name-litellm"), skips)
    assert not justified(("kubernetes", "CKV2_K8S_6", "Pod.llm-workshop.vllm-reasoning.x"), skips), \
        "vLLM has a NetworkPolicy: its absence must not be excused"
    assert not justified(("kubernetes", "CKV2_K8S_5", "RoleBinding.llm-workshop.litellm-agent-key"), skips)
    assert not justified(("kubernetes", "CKV_K8S_38", "Deployment.llm-workshop.vllm-reasoning"), skips)
    assert not justified(("cloudformation", "CKV_AWS_5", "AWS::OpenSearchService::Domain.Domain"), skips)


# ---------------------------------------------------------------- checkov itself


@needs_checkov
def test_cloudformation_template_has_no_unjustified_finding(findings: dict[str, list[Finding]]) -> None:
    assert unjustified(findings["cloudformation"], skip_list()) == []


@needs_checkov
@pytest.mark.parametrize("flavour", m.FLAVOURS)
def test_rendered_manifests_have_no_unjustified_finding(findings: dict[str, list[Finding]], flavour: str) -> None:
    assert unjustified(findings[flavour], skip_list()) == []


@needs_checkov
def test_no_skip_outlives_its_finding(findings: dict[str, list[Finding]]) -> None:
    everything = [f for found in findings.values() for f in found]
    assert stale(everything, skip_list()) == [], "a fixed finding: remove its entry from manifests/checkov-skips.yaml"
