"""What the `local` target needs on this machine: Python, disk, memory, CPU features, llama.cpp, free ports, models, secrets."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers.config import ENV_FILE, GENERATED_SECRETS, Settings, get_settings, mask
from helpers.local.doctor.check import GB, Check, gb, display_path


MIN_FREE_DISK = 3 * GB


MIN_RAM = 8 * GB


# What the workshop's portable llama.cpp build relies on, per CPU architecture.
REQUIRED_CPU_FEATURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("avx2", "fma", "f16c"),
    "arm64": ("asimd", "dotprod"),
}


def settings_check() -> tuple[Check, Settings | None]:
    """The WORKSHOP_* settings load (the target is the caller's, never read from them); else what to fix."""
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        return Check("settings", False, f"invalid settings: {problems}",
                     "Fix the WORKSHOP_* variable named above in `.env` or in the environment."), None
    return Check("settings", True, "loaded from the environment and `.env`"), settings


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
    return Check("disk space", ok, f"{gb(free)} free at {where} (needs {gb(MIN_FREE_DISK)})",
                 "" if ok else f"Free some space on that disk, or move the cache: set WORKSHOP_CACHE_DIR=<folder on a "
                 f"disk with {gb(MIN_FREE_DISK)} free> in `.env`.")


def memory_check() -> Check:
    """Total RAM, for two llama.cpp servers, a local Ray and the gateway side by side."""
    import psutil

    total = psutil.virtual_memory().total
    ok = total >= MIN_RAM
    return Check("memory", ok, f"{gb(total)} RAM (needs {gb(MIN_RAM)})",
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
            "so the workshop builds llama.cpp with explicit flags (GGML_NATIVE=OFF; AVX-512 where present, never AMX)",
            "Nothing to do if llama_cpp came from the workshop wheelhouse (`make setup`); never install "
            "llama-cpp-python with a native (-march=native) build on this machine.", level="warning"))
    return checks


def llama_cpp_check(has_amx: bool) -> Check:
    """llama_cpp imports (in a child process, so a bad build cannot crash this kernel) and is not an AMX build."""
    code = ("import llama_cpp; print(llama_cpp.__version__); "
            "print(getattr(llama_cpp, 'llama_print_system_info', lambda: b'')().decode())")
    fix = ("Run `make setup` (the first step of `make workshop`): it builds llama-cpp-python portably into the "
           "wheelhouse and installs it from there; then run the doctor from that environment: "
           "`.venv/bin/python -m helpers.local.doctor`.")
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
                     "on this CPU", "Reinstall it from the workshop wheelhouse: `make clean setup` (explicit flags, "
                     "GGML_NATIVE=OFF, never AMX).")
    return Check("llama_cpp", True, f"llama_cpp {version.strip()} imports")


def port_checks(settings: Settings | None = None) -> list[Check]:
    """Each local service's port is free, or held by that very service of this workshop, healthy."""
    from helpers.local import stack

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
                                    f"Restart it: `python -m helpers.local.stack down` then `python -m helpers.local.stack up`; "
                                    f"read why with `python -m helpers.local.stack logs {name}`.", level="warning"))
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
    from helpers.layers import models

    checks = []
    for row in models.status():
        name = str(row["model"])
        ok = bool(row["verified"])
        state = "verified" if ok else "cached but not verified" if row["cached"] else "not downloaded"
        size = f", {row['size_mb']} MB" if row["size_mb"] else ""
        checks.append(Check(f"model {name}", ok, f"{row['purpose']} model, {state}{size}",
                            "" if ok else f"`python -m helpers.layers.models fetch {name}` (or `python -m helpers.layers.models "
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
    loaded, settings = settings_check()
    checks = [python_check(), loaded]
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
