"""Preflight checks for both targets: each check says what it found and, when it fails, how to fix it.

    check   one finding (Check), with paths and secrets scrubbed
    local   what the local target needs on this machine
    aws     what the eks target needs in your AWS account and kubeconfig
    report  run(t) the checks of a target; show/report/to_html them; the command line
"""

from __future__ import annotations

from helpers.local.doctor.aws import QUOTAS, Quota, eks_checks, quota_check  # noqa: F401 - the public surface
from helpers.local.doctor.check import Check, display_path  # noqa: F401
from helpers.local.doctor.local import (  # noqa: F401
    cpu_checks,
    cpu_features,
    local_checks,
    parse_linux_cpuinfo,
    port_checks,
    secrets_check,
)
from helpers.local.doctor.report import failed_errors, main, report, run, show, to_html  # noqa: F401
