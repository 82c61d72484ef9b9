"""`make eks-plan` and `make eks` (tools/eks.py): the whole eks path in one command, and its refusal without a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import eks  # noqa: E402


def run_tool(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "eks.py"), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


def test_billable_switches_come_from_the_notebooks_own_comments() -> None:
    found = {nb.stem: eks.billable_switches(nb) for nb in eks.eks_notebooks()}
    assert found["01-cluster-and-nodepools"] == ["CREATE_CLUSTER", "RUN_GPU_SMOKE_TEST"]
    assert found["02-vllm"] == ["DEPLOY_VISION"]
    assert found["06-vector-index"] == ["DEPLOY_OPENSEARCH"]
    assert "00-welcome" not in found and "10-cleanup" in found


def test_make_eks_without_a_cluster_stops_at_once_with_the_reason(tmp_path: Path, no_aws_credentials: None) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    before = {p: p.stat().st_mtime for p in eks.OUT.glob("*.ipynb")} if eks.OUT.exists() else {}
    done = run_tool("run", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nothing was run or billed" in done.stderr
    assert "No AWS account: No AWS credentials found" in done.stderr
    assert "No cluster: No kubeconfig at" in done.stderr and done.stderr.count("Fix: ") == 2
    assert "running" not in done.stdout, "no notebook started"
    after = {p: p.stat().st_mtime for p in eks.OUT.glob("*.ipynb")} if eks.OUT.exists() else {}
    assert after == before, "no executed notebook was written"


def test_unknown_billable_switch_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eks, "preflight", lambda flavour: None)  # as if a cluster answered: the switch check comes next
    assert eks.run(None, ["CREATE_EVERYTHING"]) == 2


@pytest.mark.parametrize("flavour", ["auto-mode", "karpenter"])
def test_eks_plan_is_offline_and_prints_every_chapter_and_the_cost(flavour: str, tmp_path: Path,
                                                                    no_aws_credentials: None) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    done = run_tool("plan", "--flavour", flavour, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    from helpers.infra import manifests

    for chapter in manifests.chapters():
        assert f"\n{chapter}: " in done.stdout, chapter
    assert f"flavour {flavour}" in done.stdout and "cost per hour" in done.stdout and ", 0 finding(s)" in done.stdout
