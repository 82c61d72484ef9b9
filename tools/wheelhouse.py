"""Build llama-cpp-python once, portably, into a local wheelhouse that every install then uses.

Why: PyPI ships only an sdist, and its default build (-march=native) turns on ggml's AMX kernels on
CPUs that have AMX, where every prompt longer than one token segfaults. pip also caches built wheels
whatever CMAKE_ARGS said, so we build with --no-cache-dir into a folder keyed by the flags. On Linux x86_64 the
flags add the AVX-512 kernels the machine's CPU reports (never AMX); the wheel stays in this machine's cache.
Standard library only: this runs before the workshop's environment exists.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "workshop.txt"
LINK = ROOT / "build" / "wheelhouse"

# Portable CPU flags per architecture (no -march=native, so no AMX and no surprise instructions).
# On Linux x86_64 the AVX-512 kernels this machine's CPU has are added (x86_extensions): measured on a 2-core
# Xeon with AVX-512, prompt prefill 137 -> 205 tokens/s and decode 24.7 -> 28 tokens/s for the 0.5B chat model.
FLAGS: dict[tuple[str, str], str] = {
    ("Linux", "x86_64"): "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON",
    # Graviton2 is Neoverse-N1 (armv8.2-a + dotprod + fp16); Graviton3/4 run this too.
    ("Linux", "aarch64"): "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16",
    # Apple silicon: Metal on, no native CPU tuning needed for portability across M-series.
    ("Darwin", "arm64"): "-DGGML_NATIVE=OFF -DGGML_METAL=ON",
    ("Darwin", "x86_64"): "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON",
}


def cache_root() -> Path:
    """The user-level cache shared by every checkout (so a fresh clone does not rebuild)."""
    if os.environ.get("WORKSHOP_CACHE_DIR"):
        return Path(os.environ["WORKSHOP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llm-eks-workshop"


def pinned_version() -> str:
    """The llama-cpp-python version pinned in requirements/workshop.txt."""
    m = re.search(r"^llama-cpp-python(?:\[[^\]]*\])?==(\S+)", LOCK.read_text(), re.M)
    if not m:
        sys.exit("requirements/workshop.txt does not pin llama-cpp-python")
    return m.group(1)


# ggml's x86 options beyond AVX2, each with the /proc/cpuinfo flags it needs, in the order they are added.
# AMX stays off: ggml's AMX kernels segfault on every prompt longer than one token (see the module docstring).
X86_EXTENSIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("-DGGML_AVX_VNNI=ON", frozenset({"avx_vnni"})),
    ("-DGGML_AVX512=ON", frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})),
    ("-DGGML_AVX512_VBMI=ON", frozenset({"avx512f", "avx512vbmi"})),
    ("-DGGML_AVX512_VNNI=ON", frozenset({"avx512f", "avx512_vnni"})),
    ("-DGGML_AVX512_BF16=ON", frozenset({"avx512f", "avx512_bf16"})),
)


def x86_extensions(cpu_flags: set[str]) -> str:
    """The ggml options for the instruction sets these CPU flags (from /proc/cpuinfo) say the machine has."""
    return " ".join(option for option, needs in X86_EXTENSIONS if needs <= cpu_flags)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first processor's flags in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def cmake_args() -> str:
    """The build flags for this machine, or an explanation when the platform is unknown."""
    key = (platform.system(), platform.machine())
    if os.environ.get("CMAKE_ARGS"):
        return os.environ["CMAKE_ARGS"]
    if key not in FLAGS:
        sys.exit(f"No portable llama.cpp build flags known for {key}; set CMAKE_ARGS yourself and re-run.")
    if key == ("Linux", "x86_64"):
        return " ".join(part for part in (FLAGS[key], x86_extensions(cpu_flags())) if part)
    return FLAGS[key]


def wheel_dir(flags: str) -> Path:
    """The wheelhouse folder for this machine and these flags."""
    tag = hashlib.sha256(flags.encode()).hexdigest()[:8]
    return cache_root() / "wheelhouse" / f"{platform.system().lower()}-{platform.machine()}-{tag}"


def main() -> int:
    """Build the wheel if it is missing, then point build/wheelhouse at it."""
    version = pinned_version()
    flags = cmake_args()
    out = wheel_dir(flags)
    wheels = sorted(out.glob(f"llama_cpp_python-{version}-*.whl"))
    if wheels:
        print(f"wheelhouse: llama-cpp-python {version} already built ({wheels[0].name})")
    else:
        out.mkdir(parents=True, exist_ok=True)
        print(f"wheelhouse: building llama-cpp-python {version} with CMAKE_ARGS='{flags}' (5-10 min on 2 cores)...")
        start = time.monotonic()
        env = {**os.environ, "CMAKE_ARGS": flags, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--disable-pip-version-check",
               "-w", str(out), f"llama-cpp-python=={version}"]
        log = out / "build.log"
        with log.open("w") as fh:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-25:])
            sys.exit(f"llama-cpp-python build failed (full log: {log}):\n{tail}\n"
                     "Fix: install a C/C++ compiler and cmake (Debian: apt-get install build-essential cmake).")
        print(f"wheelhouse: built in {time.monotonic() - start:.0f} s")
    LINK.parent.mkdir(parents=True, exist_ok=True)
    if LINK.is_symlink() or LINK.exists():
        LINK.unlink()
    LINK.symlink_to(out, target_is_directory=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
