"""Preflight checks for both targets: each check says what it found and, when it fails, how to fix it."""

from __future__ import annotations

import argparse
import html
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from helpers.config import ENV_FILE, GENERATED_SECRETS, ROOT, Settings, get_settings, mask

if TYPE_CHECKING:  # boto3 is imported lazily: the local target does not need it
    import boto3

Level = Literal["error", "warning"]
T = TypeVar("T")

# Decimal units on purpose: a laptop sold with 8 GiB reports ~7.6 GiB total, which is still 8.2 GB.
GB = 1_000_000_000
MIN_FREE_DISK = 3 * GB
MIN_RAM = 8 * GB

# What the workshop's portable llama.cpp build relies on, per CPU architecture.
REQUIRED_CPU_FEATURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("avx2", "fma", "f16c"),
    "arm64": ("asimd", "dotprod"),
}

AWS_TIMEOUT_S = 10.0  # hard deadline for any single AWS step (also covers a hanging DNS lookup)


@dataclass
class Check:
    """One preflight finding: what was checked, whether it passed, what was seen, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    level: Level = "error"

    def __post_init__(self) -> None:
        # every message is shown to learners and committed in notebook outputs: no machine paths
        self.detail = _scrub(self.detail)
        self.fix = _scrub(self.fix)

    @property
    def symbol(self) -> str:
        """✔ passed, ✘ failed error, ! failed warning."""
        if self.ok:
            return "✔"
        return "✘" if self.level == "error" else "!"


# ---------------------------------------------------------------- paths and secrets never leak


_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/", "/bin/", "/sbin/", "/lib/")
_ABS_PATH = re.compile(r"(?<![\w.:/~\-])/(?:[\w.+@\-]+/)*[\w.+@\-]+/?")


def display_path(path: Path | str) -> str:
    """A path as it may be shown: relative to the project, `~/...` under home, else only its last part."""
    text = str(path)
    for root in _project_roots():
        if text == root:
            return "."
        if text.startswith(root + "/"):
            return text[len(root) + 1:]
    for home in _home_dirs():
        if text == home:
            return "~"
        if text.startswith(home + "/"):
            return "~/" + text[len(home) + 1:]
    if text.startswith("/") and not text.startswith(_SYSTEM_PREFIXES):
        return "…/" + Path(text).name
    return text


def _project_roots() -> list[str]:
    return sorted({str(ROOT), os.path.realpath(ROOT)}, key=len, reverse=True)


def _home_dirs() -> list[str]:
    home = Path.home()
    return sorted({str(home), os.path.realpath(home)}, key=len, reverse=True)


def _scrub(text: str) -> str:
    """Rewrite every absolute path in a message with display_path."""
    return _ABS_PATH.sub(lambda m: display_path(m.group(0)), text)


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


# ---------------------------------------------------------------- local target


def _settings_check() -> tuple[Check, Settings | None]:
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        return Check("settings", False, f"invalid settings: {problems}",
                     "Fix the WORKSHOP_* variable named above in `.env` or in the environment."), None
    return Check("settings", True, f"target {settings.target}, loaded from the environment and `.env`"), settings


def python_check() -> Check:
    """Python is 3.11, the version every pinned dependency was resolved for."""
    version = platform.python_version()
    ok = sys.version_info[:2] == (3, 11)
    return Check("python", ok, f"Python {version}" + ("" if ok else " (the workshop needs 3.11)"),
                 "" if ok else "Install Python 3.11 (e.g. `uv python install 3.11` or pyenv), then `make clean setup` "
                 "rebuilds the workshop environment with it.")


def disk_check(settings: Settings) -> Check:
    """Free space where the model cache lives (the nearest existing parent folder)."""
    folder = settings.cache_dir
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    ok = free >= MIN_FREE_DISK
    where = display_path(settings.cache_dir)
    return Check("disk space", ok, f"{_gb(free)} free at {where} (needs {_gb(MIN_FREE_DISK)})",
                 "" if ok else f"Free some space on that disk, or move the cache: set WORKSHOP_CACHE_DIR=<folder on a "
                 f"disk with {_gb(MIN_FREE_DISK)} free> in `.env`.")


def memory_check() -> Check:
    """Total RAM, for two llama.cpp servers, a local Ray and the gateway side by side."""
    import psutil

    total = psutil.virtual_memory().total
    ok = total >= MIN_RAM
    return Check("memory", ok, f"{_gb(total)} RAM (needs {_gb(MIN_RAM)})",
                 "" if ok else "Close other applications, or run the smoke variant with the tiny model: "
                 "set WORKSHOP_CHAT_MODEL=smollm2-135m-instruct-q4_1 in `.env`.")


def _run_quiet(argv: list[str], timeout: float = 5.0) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _normalise_arch(machine: str) -> str:
    machine = machine.lower()
    if machine in {"amd64", "x86_64", "x64"}:
        return "x86_64"
    if machine in {"arm64", "aarch64"}:
        return "arm64"
    return machine


def cpu_features() -> tuple[str, set[str] | None]:
    """This CPU's architecture and its instruction-set features (None when they cannot be read)."""
    arch = _normalise_arch(platform.machine())
    system = platform.system()
    if system == "Linux":
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return arch, None
        return arch, parse_linux_cpuinfo(text)
    if system == "Darwin":
        if arch == "arm64":
            feats = {"asimd"}  # every Apple silicon CPU has NEON (asimd)
            if (_run_quiet(["sysctl", "-n", "hw.optional.arm.FEAT_DotProd"]) or "").strip() != "0":
                feats.add("dotprod")  # unreadable on old macOS, but every M-series chip has it
            return arch, feats
        out = _run_quiet(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"])
        if out is None:
            return arch, None
        return arch, {tok.lower().replace("avx1.0", "avx") for tok in out.split()}
    return arch, None


def parse_linux_cpuinfo(text: str) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (x86 `flags`, arm `Features`), normalised."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in {"flags", "features"}:
            flags = set(value.split())
            if "asimddp" in flags:  # the Linux name of the Armv8.2 dot-product extension
                flags.add("dotprod")
            return flags
    return set()


def _rosetta() -> bool:
    if platform.system() != "Darwin":
        return False
    return (_run_quiet(["sysctl", "-n", "sysctl.proc_translated"]) or "").strip() == "1"


def cpu_checks() -> list[Check]:
    """CPU count, the features the portable llama.cpp build uses, and AMX (which native builds trip on)."""
    import psutil

    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    checks = [Check("cpu count", logical >= 2, f"{logical} logical CPUs ({physical} physical)",
                    "" if logical >= 2 else "One CPU makes every local model call very slow; use a machine with "
                    "at least 2 (4+ is comfortable).", level="warning")]
    arch, feats = cpu_features()
    if _rosetta():
        checks.append(Check("cpu features", False, "this Python is x86_64 running under Rosetta on Apple silicon",
                            "Install an arm64 (native) Python 3.11 and rebuild the environment: `make clean setup`; "
                            "llama.cpp under Rosetta has no AVX and is very slow.", level="warning"))
        return checks
    wanted = REQUIRED_CPU_FEATURES.get(arch)
    if wanted is None or feats is None:
        why = f"unknown architecture {arch!r}" if wanted is None else f"cannot read CPU features on {platform.system()}"
        checks.append(Check("cpu features", False, f"{why}; llama.cpp may still work",
                            "The workshop is tested on Linux and macOS (x86_64 and arm64); if the model server "
                            "crashes, build llama-cpp-python for this machine.", level="warning"))
        return checks
    missing = [f for f in wanted if f not in feats]
    seen = f"{arch}: " + ", ".join(f"{f} {'yes' if f in feats else 'NO'}" for f in wanted)
    if not missing:
        checks.append(Check("cpu features", True, seen))
    elif arch == "x86_64":
        checks.append(Check("cpu features", False, seen,
                            f"The workshop's portable llama.cpp build uses {', '.join(wanted)}; this CPU lacks "
                            f"{', '.join(missing)}, so the model server would stop with 'illegal instruction'. "
                            "Rebuild llama-cpp-python with those GGML_* options OFF (slower), or use a newer machine."))
    else:
        checks.append(Check("cpu features", False, seen,
                            f"Without {', '.join(missing)} llama.cpp runs, but its quantized kernels are slower; "
                            "expect fewer tokens per second.", level="error" if "asimd" in missing else "warning"))
    if arch == "x86_64" and "amx_tile" in feats:
        checks.append(Check(
            "cpu AMX", False,
            "AMX present (amx_tile): native llama.cpp builds segfault on prompts longer than one token, "
            "so the workshop builds llama.cpp portably (GGML_NATIVE=OFF)",
            "Nothing to do if llama_cpp came from the workshop wheelhouse (`make setup`); never install "
            "llama-cpp-python with a native (-march=native) build on this machine.", level="warning"))
    return checks


def llama_cpp_check(has_amx: bool) -> Check:
    """llama_cpp imports (in a child process, so a bad build cannot crash this kernel) and is not an AMX build."""
    code = ("import llama_cpp; print(llama_cpp.__version__); "
            "print(getattr(llama_cpp, 'llama_print_system_info', lambda: b'')().decode())")
    fix = ("Run `make setup` (the first step of `make workshop`): it builds llama-cpp-python portably into the "
           "wheelhouse and installs it from there; then run the doctor from that environment: "
           "`.venv/bin/python -m helpers.doctor`.")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return Check("llama_cpp", False, "importing llama_cpp took over 60 s", fix)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        if proc.returncode < 0:
            last = f"the import crashed (signal {-proc.returncode})"
        return Check("llama_cpp", False, f"not importable: {last[:200]}", fix)
    version, _, system_info = proc.stdout.partition("\n")
    if has_amx and "AMX" in system_info:
        return Check("llama_cpp", False, f"llama_cpp {version.strip()} was built with AMX kernels, which segfault "
                     "on this CPU", "Reinstall it from the workshop wheelhouse: `make clean setup` (portable build, "
                     "GGML_NATIVE=OFF).")
    return Check("llama_cpp", True, f"llama_cpp {version.strip()} imports")


def port_checks(settings: Settings | None = None) -> list[Check]:
    """Each local service's port is free, or held by that very service of this workshop, healthy."""
    from helpers import stack

    settings = settings or get_settings()
    statuses: dict[str, Any] | None = None
    checks = []
    ports = {svc.port(settings) for svc in stack.SERVICES.values()}
    for name, svc in stack.SERVICES.items():
        port = svc.port(settings)
        label = f"port {port} ({name})"
        owner = stack.port_owner(port, settings.host)
        if owner is None:
            checks.append(Check(label, True, f"free on {settings.host}"))
            continue
        if statuses is None:
            statuses = {st.name: st for st in stack.status()}
        st = statuses.get(name)
        owner_pid = _pid_of(owner)
        if st is not None and st.pid and (owner_pid is None or _same_tree(st.pid, owner_pid)):
            if st.state == "healthy":
                checks.append(Check(label, True, f"held by the workshop's own {name} (pid {st.pid}), healthy"))
            else:
                checks.append(Check(label, False, f"held by the workshop's own {name} (pid {st.pid}), {st.state}",
                                    f"Restart it: `python -m helpers.stack down` then `python -m helpers.stack up`; "
                                    f"read why with `python -m helpers.stack logs {name}`.", level="warning"))
            continue
        setting = f"WORKSHOP_{svc.port_setting.upper()}"
        spare = _spare_port(port, ports, settings.host)
        checks.append(Check(
            label, False, f"taken by another program: {owner}",
            f"Stop that program{f' (pid {owner_pid})' if owner_pid else ''}, or move the workshop's {name}: set "
            f"{setting}={spare or '<a free port>'} in `.env`, then re-run (in a notebook: restart the kernel).",
        ))
    return checks


def _pid_of(owner: str) -> int | None:
    match = re.match(r"pid (\d+)", owner)
    return int(match.group(1)) if match else None


def _same_tree(parent: int, pid: int) -> bool:
    import psutil

    if parent == pid:
        return True
    try:
        return pid in {p.pid for p in psutil.Process(parent).children(recursive=True)}
    except psutil.Error:
        return False


def _spare_port(start: int, taken: set[int], host: str) -> int | None:
    for port in range(start + 10, start + 60):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    return None


def model_checks() -> list[Check]:
    """Each registered model file is in the cache and verified against its checksum."""
    from helpers import models

    checks = []
    for row in models.status():
        name = str(row["model"])
        ok = bool(row["verified"])
        state = "verified" if ok else "cached but not verified" if row["cached"] else "not downloaded"
        size = f", {row['size_mb']} MB" if row["size_mb"] else ""
        checks.append(Check(f"model {name}", ok, f"{row['purpose']} model, {state}{size}",
                            "" if ok else f"`python -m helpers.models fetch {name}` (or `python -m helpers.models "
                            "fetch` for all): downloads, assembles and verifies it."))
    return checks


def secrets_check(settings: Settings, env_file: Path = ENV_FILE) -> Check:
    """The git-ignored .env holds every generated secret (shown masked), readable by its owner only."""
    fix = ("Run `python -c \"from helpers.config import ensure_secrets; ensure_secrets()\"` to generate the missing "
           "ones (never commit `.env`).")
    if not env_file.exists():
        return Check("secrets (.env)", False, f"{display_path(env_file)} does not exist", fix)
    names = {line.partition("=")[0].strip() for line in env_file.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#")}
    missing = [n for n in GENERATED_SECRETS if n not in names and not os.environ.get(n)]
    fields = [n.removeprefix("WORKSHOP_").lower() for n in GENERATED_SECRETS]
    shown = ", ".join(f"{field} {mask(getattr(settings, field, None))}" for field in fields)
    if missing:
        return Check("secrets (.env)", False, f"missing {', '.join(missing)}", fix)
    if env_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check("secrets (.env)", False, f"{shown}; but {display_path(env_file)} is readable by other users",
                     f"`chmod 600 {display_path(env_file)}`", level="warning")
    return Check("secrets (.env)", True, shown)


def local_checks() -> list[Check]:
    """Everything the `local` target needs on this machine."""
    settings_check, settings = _settings_check()
    checks = [python_check(), settings_check]
    if settings is not None:
        checks += [disk_check(settings), memory_check()]
    else:
        checks.append(memory_check())
    cpu = cpu_checks()
    checks += cpu
    checks.append(llama_cpp_check(has_amx=any(c.name == "cpu AMX" for c in cpu)))
    if settings is not None:
        checks += port_checks(settings)
        checks += model_checks()
        checks.append(secrets_check(settings))
    return checks


# ---------------------------------------------------------------- eks target


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
    settings_check, settings = _settings_check()
    if settings is None:
        return [settings_check]
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


# ---------------------------------------------------------------- running and showing


def run(target: str) -> list[Check]:
    """The checks of one target ("local" or "eks")."""
    if target == "local":
        return local_checks()
    if target == "eks":
        return eks_checks()
    raise ValueError(f"Unknown target {target!r}: use 'local' or 'eks'.")


def failed_errors(checks: list[Check]) -> list[Check]:
    """The failed checks that block the workshop (error level)."""
    return [c for c in checks if not c.ok and c.level == "error"]


def _summary(checks: list[Check]) -> str:
    errors = len(failed_errors(checks))
    warnings = sum(1 for c in checks if not c.ok and c.level == "warning")
    passed = sum(1 for c in checks if c.ok)
    return f"{passed} passed, {errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


def report(checks: list[Check]) -> str:
    """A plain-text table: status symbol, name, detail, and the fix under each failed check."""
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"   {'check':<{width}}  detail", f"   {'-' * width}  {'-' * 6}"]
    for c in checks:
        lines.append(f"{c.symbol}  {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"   {'':<{width}}  fix: {c.fix}")
    lines.append("")
    lines.append(_summary(checks))
    return "\n".join(lines)


def to_html(checks: list[Check]) -> str:
    """The checks as an HTML table (fixes under failed rows), for notebooks and the book."""
    colours = {"✔": "#1a7f37", "✘": "#cf222e", "!": "#9a6700"}
    rows = []
    for c in checks:
        fix = (f"<br><span style='color:#57606a'>fix: {html.escape(c.fix)}</span>" if not c.ok and c.fix else "")
        rows.append(f"<tr><td style='color:{colours[c.symbol]};font-weight:bold;text-align:center'>{c.symbol}</td>"
                    f"<td style='text-align:left;white-space:nowrap'>{html.escape(c.name)}</td>"
                    f"<td style='text-align:left'>{html.escape(c.detail)}{fix}</td></tr>")
    return ("<table><thead><tr><th></th><th style='text-align:left'>check</th>"
            "<th style='text-align:left'>detail</th></tr></thead><tbody>" + "".join(rows)
            + f"</tbody></table><p>{html.escape(_summary(checks))}</p>")


def show(checks: list[Check]) -> None:
    """Display the checks as an HTML table in Jupyter, or print the text report elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        display(HTML(to_html(checks)))
    else:
        print(report(checks))


def main(argv: list[str] | None = None) -> int:
    """Command line: print the report for a target; exit 1 when an error-level check failed."""
    parser = argparse.ArgumentParser(prog="python -m helpers.doctor", description=__doc__)
    parser.add_argument("--target", choices=("local", "eks"), default=None,
                        help="which target to check (default: WORKSHOP_TARGET, else local)")
    args = parser.parse_args(argv)
    target = args.target
    if target is None:
        try:
            target = get_settings().target
        except Exception:  # invalid settings are reported by the checks themselves
            target = "local"
    print(f"workshop doctor: target {target}\n")
    checks = run(target)
    print(report(checks))
    return 1 if failed_errors(checks) else 0


if __name__ == "__main__":
    sys.exit(main())
