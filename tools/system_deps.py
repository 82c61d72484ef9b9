"""The programs the workshop needs from the system, installed with its package manager where that is allowed.

    python3.11 tools/system_deps.py           # install what is missing (apt-get as root or with passwordless sudo,
                                              # Homebrew on macOS), or stop with the one line that installs it
    python3.11 tools/system_deps.py --check   # only say what is there and what is missing

Needed: redis-server (the gateway's response cache: without it notebook 04 renders `type: local` and its committed
output says `type: redis`), Chromium (the book's browser check, tests/test_book.py), and, only while the
llama-cpp-python wheel is not built yet, a C/C++ compiler and cmake. WORKSHOP_SYSTEM_PACKAGES=skip goes on without
installing anything (the gateway then caches in memory, and `make test` fails where that shows).
Standard library only: it runs first, before any environment exists.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SKIP_VAR = "WORKSHOP_SYSTEM_PACKAGES"


@dataclass(frozen=True)
class Need:
    """One program: how to tell it is there, why the workshop needs it, its package per manager."""

    name: str
    why: str
    paths: tuple[str, ...]  # any of these (a command on PATH, or an absolute path) means it is there
    packages: dict[str, str] = field(default_factory=dict)  # manager -> package ("" = that manager cannot)
    optional_on: tuple[str, ...] = ()  # platforms where it is not needed: say so, do not stop

    def present(self) -> bool:
        """True when one of its paths exists (absolute) or is found on PATH."""
        return any(Path(p).exists() if p.startswith("/") else shutil.which(p) for p in self.paths)


REDIS = Need("redis-server", "the gateway's response cache (notebook 04; without it the committed output differs)",
             ("redis-server",), {"apt": "redis-server", "brew": "redis"})
CHROMIUM = Need("chromium", "the book's browser check (tests/test_book.py opens /usr/bin/chromium)",
                ("/usr/bin/chromium",), {"apt": "chromium", "brew": ""}, optional_on=("macos", "ubuntu"))
COMPILER = Need("C/C++ compiler", "building llama-cpp-python once (no wheel cached yet)", ("c++", "g++", "clang++"),
                {"apt": "build-essential", "brew": ""})
CMAKE = Need("cmake", "building llama-cpp-python once (no wheel cached yet)", ("cmake",),
             {"apt": "cmake", "brew": "cmake"})
MAKE = Need("make", "running the workshop's Makefile", ("make",), {"apt": "make", "brew": ""})


def os_family() -> str:
    """macos, ubuntu, debian (and other apt systems) or other."""
    if platform.system() == "Darwin":
        return "macos"
    try:
        release = Path("/etc/os-release").read_text().lower()
    except OSError:
        return "other"
    if "ubuntu" in release:
        return "ubuntu"
    return "debian" if shutil.which("apt-get") else "other"


def manager(family: str) -> str | None:
    """The package manager this script may use here: apt, brew or none."""
    if family in {"debian", "ubuntu"} and shutil.which("apt-get"):
        return "apt"
    if family == "macos" and shutil.which("brew"):
        return "brew"
    return None


def wheel_missing() -> bool:
    """True when the llama-cpp-python wheel still has to be built here (so the build tools are needed)."""
    try:
        import envs

        return not envs.wheel_cached()
    except SystemExit:  # no portable flags known for this platform: the build will say so itself
        return True


def needs() -> list[Need]:
    """Everything this machine needs for `make workshop` and `make test`."""
    found = [MAKE, REDIS, CHROMIUM]
    if wheel_missing():
        found += [COMPILER, CMAKE]
    return found


def pip_missing() -> bool:
    """True when this Python has neither pip nor ensurepip (Debian without python3-pip/python3-venv)."""
    probe = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('pip') or u.find_spec('ensurepip') else 1)"
    return subprocess.run([sys.executable, "-c", probe]).returncode != 0


def privilege() -> list[str] | None:
    """The prefix that runs apt-get as root here ([] as root, sudo -n with passwordless sudo), or None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def install_line(mgr: str | None, packages: list[str]) -> str:
    """The one command a person runs to install the packages."""
    if mgr == "apt":
        return "sudo apt-get install -y " + " ".join(packages)
    if mgr == "brew":
        return "brew install " + " ".join(packages)
    return "install with your package manager: " + ", ".join(packages)


def install(mgr: str, packages: list[str]) -> bool:
    """Install with the package manager (apt-get update first); True when it succeeded."""
    if mgr == "brew":
        return subprocess.run(["brew", "install", *packages]).returncode == 0
    prefix = privilege()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [[*prefix, "apt-get", "update", "-qq"], [*prefix, "apt-get", "install", "-y", "-qq", *packages]]
    for step in steps:
        print("system packages: " + shlex.join(step), flush=True)
        if subprocess.run(step, env=env).returncode != 0:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Check, then install what is missing or stop with the one line that does."""
    parser = argparse.ArgumentParser(prog="python3.11 tools/system_deps.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report; install nothing")
    args = parser.parse_args(argv)
    family = os_family()
    mgr = manager(family)
    missing = [n for n in needs() if not n.present()]
    optional = [n for n in missing if family in n.optional_on]
    required = [n for n in missing if n not in optional]
    for n in optional:
        print(f"system packages: no {n.name} ({n.why}); on {family} that check is skipped")
    if pip_missing():
        print(f"system packages: {sys.executable} has neither pip nor ensurepip: uv is installed with pip.\n"
              + install_line(mgr, ["python3-pip", "python3-venv"] if mgr == "apt" else ["python@3.11"]))
        return 1
    if not required:
        print("system packages: all there (" + ", ".join(n.name for n in needs() if n.present()) + ")")
        return 0
    for n in required:
        print(f"system packages: missing {n.name}: {n.why}")
    packages = [n.packages.get(mgr or "", "") for n in required]
    unnamed = [n.name for n, p in zip(required, packages) if not p]
    packages = [p for p in packages if p]
    if args.check:
        return 1
    if os.environ.get(SKIP_VAR, "").lower() == "skip":
        print(f"system packages: {SKIP_VAR}=skip: going on without them")
        return 0
    can = mgr == "brew" or (mgr == "apt" and privilege() is not None)
    if packages and can and not unnamed:
        if install(mgr, packages) and all(n.present() for n in required):
            print("system packages: installed " + ", ".join(packages))
            return 0
        print("system packages: the install did not give every program; see the output above", file=sys.stderr)
    fix = install_line(mgr, packages) if packages else ""
    if "C/C++ compiler" in unnamed and family == "macos":
        fix = (fix + " && " if fix else "") + "xcode-select --install"
    elif unnamed:
        fix = install_line(None, unnamed) if not fix else fix + "  (and: " + ", ".join(unnamed) + ")"
    print(f"\nInstall them, then run make again:\n  {fix}\n"
          f"(or go on without them: {SKIP_VAR}=skip make ...)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
