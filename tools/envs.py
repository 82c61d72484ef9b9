"""Create the workshop's virtual environments with uv: exactly the pinned sets of requirements/*.txt, in minutes.

    python3.11 tools/envs.py install workshop litellm phoenix --models   # `make setup`
    python3.11 tools/envs.py install checkov                             # one environment (`make checkov-env`)
    python3.11 tools/envs.py uv                                          # the pinned uv's path (installs it once)

- uv is pinned in requirements/tools.txt and installed once per machine, with pip, into the workshop's user cache
  (no sudo, no PATH change). Each environment is created with it, seeded with the pip and setuptools pinned there,
  then given its requirement file with `uv pip install -r`: the same files, resolved the same way, as the pip path
  (environment.yml) and the former Makefile; uv is only faster. The machine's pip settings (index, extra indexes,
  find-links, constraints, CA bundle) are passed on to uv, which does not read pip's configuration.
- The llama-cpp-python wheel (tools/wheelhouse.py, a portable build into the user cache) is built in the background
  while the environments install; the workshop environment takes everything else meanwhile and the wheel once the
  build has ended. A failed build fails the command with the build's own message and log.
- An environment whose stamp (`.installed-<sha256 of its requirement files>`) is present is left alone.
- Every phase's seconds go to build/timings.jsonl (tools/timings.py): `make workshop` prints them at the end.
- WORKSHOP_INSTALLER=pip installs with pip instead of uv (same files, same order), for machines where uv cannot run.

Standard library only: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import timings  # noqa: E402 - tools/ is not a package
import wheelhouse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PINS = ROOT / "requirements" / "tools.txt"
LOG = "build/logs/wheelhouse.log"  # the background build's output, under the checkout
PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*$")
LLAMA = re.compile(r"^llama-cpp-python(\[[^\]]*\])?==", re.I)


@dataclass(frozen=True)
class Env:
    """One virtual environment: where it lives, what it installs, what it is for."""

    name: str
    path: str
    requirements: str
    purpose: str
    stamp_inputs: tuple[str, ...] = ()
    workshop: bool = False  # takes llama-cpp-python from the wheelhouse and the project itself (editable)

    @property
    def dir(self) -> Path:
        """The environment's folder."""
        return ROOT / self.path

    @property
    def python(self) -> Path:
        """The environment's interpreter."""
        return self.dir / "bin" / "python"

    def stamp(self) -> Path:
        """The file that says this environment holds the current pinned set (same name the Makefile used).

        The workshop's stamp also covers the llama.cpp build flags, so a new build (other CPU flags) is installed."""
        parts = [(ROOT / f).read_bytes() for f in self.stamp_inputs or (self.requirements,)]
        if self.workshop:
            parts.append(wheelhouse.cmake_args().encode())
        digest = hashlib.sha256(b"".join(parts))
        return self.dir / f".installed-{digest.hexdigest()[:12]}"


ENVS: dict[str, Env] = {e.name: e for e in (
    Env("workshop", ".venv", "requirements/workshop.txt", "the notebooks, the library and its tests",
        ("requirements/workshop.txt", "pyproject.toml"), workshop=True),
    Env("litellm", ".venvs/litellm", "requirements/litellm.txt",
        "the LiteLLM proxy's own set (its dependencies conflict with strands-agents)"),
    Env("phoenix", ".venvs/phoenix", "requirements/phoenix.txt", "Arize Phoenix, notebook 05's local trace store"),
    Env("checkov", ".venvs/checkov", "requirements/checkov.txt", "checkov, for the manifest policy tests"),
    Env("reference", ".venvs/reference", "requirements/reference.txt",
        "sentence-transformers on CPU torch, for the embedding parity test"),
)}


class SetupError(SystemExit):
    """A step failed: the message says which and how to fix it (exit status 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"setup: {message}")


def tool_pins(path: Path = TOOLS_PINS) -> dict[str, str]:
    """name -> version of requirements/tools.txt (uv, and the seed of every environment)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = PIN_LINE.match(line.split("#", 1)[0].strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def seed_pins() -> list[str]:
    """pip and setuptools, pinned: what every environment holds before its requirements."""
    pins = tool_pins()
    return [f"{name}=={pins[name]}" for name in ("pip", "setuptools") if name in pins]


# ---------------------------------------------------------------- the installers


def has_pip(python: str) -> bool:
    """True when `python -m pip` works."""
    return subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0


def pip_python() -> str:
    """An interpreter of this Python that has pip: this one, or a small venv in the cache (Debian without pip)."""
    if has_pip(sys.executable):
        return sys.executable
    venv = wheelhouse.cache_root() / "tools" / f"pip-py{sys.version_info[0]}{sys.version_info[1]}"
    python = venv / "bin" / "python"
    if not python.exists():
        proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupError(f"this Python has neither pip nor a working venv module ({proc.stderr.strip()[-300:]}).\n"
                             "Fix: install them (Debian/Ubuntu: sudo apt-get install python3-pip python3-venv), "
                             "or run `make system-deps`.")
    return str(python)


def uv_path() -> Path:
    """The pinned uv, installed once per machine into the user cache with pip (no sudo needed)."""
    version = tool_pins()["uv"]
    home = wheelhouse.cache_root() / "tools" / f"uv-{version}"
    uv = home / "bin" / "uv"
    if uv.exists() and version in subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout:
        return uv
    print(f"setup: installing uv {version} into {home} (once per machine)", flush=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".uv-{version}-", dir=home.parent))
    cmd = [pip_python(), "-m", "pip", "install", "--quiet", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--target", str(staging), f"uv=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (staging / "bin" / "uv").exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise SetupError(f"pip could not install uv=={version}: {proc.stderr.strip()[-600:]}\n"
                         "Fix: check that pip reaches the package index (`python3.11 -m pip download uv`), "
                         "or use pip for everything: WORKSHOP_INSTALLER=pip make setup")
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)  # atomic: a concurrent set-up sees either no uv or a whole one
    return uv


PIP_CONFIG = re.compile(r"^(?P<section>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")
SECTION_RANK = {"global": 0, "install": 1, ":env:": 2}  # pip's own precedence: later sections override


def pip_settings(python: str) -> dict[str, str]:
    """The package-source settings pip uses on this machine (`pip config list`: files and PIP_* variables)."""
    proc = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True)
    found: dict[str, tuple[int, str]] = {}
    for line in proc.stdout.splitlines():
        m = PIP_CONFIG.match(line.strip())
        if not m or m["section"] not in SECTION_RANK:
            continue
        rank = SECTION_RANK[m["section"]]
        if m["key"] not in found or rank >= found[m["key"]][0]:
            found[m["key"]] = (rank, m["value"])
    return {key: value for key, (_, value) in found.items()}


def uv_source_args(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv flags and environment for the same package sources pip has (uv reads no pip configuration)."""
    args: list[str] = []
    env: dict[str, str] = {}
    if settings.get("index-url"):
        args += ["--index-url", settings["index-url"]]
    for key, flag in (("extra-index-url", "--extra-index-url"), ("find-links", "--find-links"),
                      ("constraint", "--constraint")):
        for value in settings.get(key, "").split():
            args += [flag, value]
    if settings.get("extra-index-url") or settings.get("find-links"):
        args += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best match across every source
    if settings.get("cert") and "SSL_CERT_FILE" not in os.environ:
        env["SSL_CERT_FILE"] = settings["cert"]
    timeout = settings.get("timeout") or settings.get("default-timeout")
    if timeout and "UV_HTTP_TIMEOUT" not in os.environ:
        env["UV_HTTP_TIMEOUT"] = timeout.split(".")[0]
    return args, env


class Installer:
    """Creates environments and installs requirement files into them, with uv (default) or pip."""

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind or os.environ.get("WORKSHOP_INSTALLER", "uv")
        if self.kind not in {"uv", "pip"}:
            raise SetupError(f"WORKSHOP_INSTALLER={self.kind!r}: use uv (the default) or pip")
        self.uv = uv_path() if self.kind == "uv" else None
        self.source_args, self.env = (uv_source_args(pip_settings(pip_python())) if self.uv else ([], {}))

    def describe(self) -> str:
        """The installer and its version, for the log."""
        return f"uv {tool_pins()['uv']}" if self.uv else "pip"

    def create(self, env: Env) -> None:
        """Create the environment's folder when it has no interpreter yet, and seed it with pip and setuptools."""
        if not env.python.exists():
            if self.uv:
                self.run([str(self.uv), "venv", "--quiet", "--python", sys.executable, str(env.dir)], env.name)
            else:
                self.run([sys.executable, "-m", "venv", str(env.dir)], env.name)
        self.install(env, seed_pins())

    def install(self, env: Env, args: list[str], last: bool = False) -> None:
        """`pip install ARGS` into the environment, with uv or pip; `last`: the environment's last install.

        pip compiles what it installs to bytecode; uv leaves that to the first import, which never writes it where
        PYTHONDONTWRITEBYTECODE is set (as in CI): every process, each Ray worker too, then compiles Ray, LiteLLM or
        Phoenix again on each start. So uv compiles the whole environment once, with its last install (uv skips
        that step when an install has nothing to do)."""
        if self.uv:
            cmd = [str(self.uv), "pip", "install", "--quiet", *(["--compile-bytecode"] if last else []),
                   "--python", str(env.python), *self.source_args, *args]
        else:
            cmd = [str(env.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
        self.run(cmd, env.name)

    def run(self, cmd: list[str], what: str) -> None:
        """Run one installer command; on failure, stop with its output and the command to repeat it."""
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **self.env}, capture_output=True, text=True)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()
            raise SetupError(f"installing {what} failed:\n{out[-3000:]}\ncommand: {' '.join(cmd)}")


# ---------------------------------------------------------------- the wheel, built alongside


class WheelBuild:
    """tools/wheelhouse.py in the background (a process group of its own), its output in build/logs."""

    def __init__(self, cmd: list[str] | None = None, log: Path | None = None) -> None:
        self.log = log or ROOT / LOG
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.ended: float | None = None
        self.rc: int | None = None
        fh = self.log.open("w")
        self.proc = subprocess.Popen(cmd or [pip_python(), str(ROOT / "tools" / "wheelhouse.py")], cwd=ROOT,
                                     stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        fh.close()
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        self.rc = self.proc.wait()
        self.ended = time.monotonic()

    def join(self) -> None:
        """Wait for the build; record it; stop with the build's own message when it failed."""
        waited = time.monotonic()
        if self.rc is None:
            print("setup: waiting for the llama-cpp-python build to finish ...", flush=True)
        self.thread.join()
        timings.record("waiting for the wheel", time.monotonic() - waited,
                       note="time the set-up spent blocked on the build")
        took = (self.ended or time.monotonic()) - self.started
        timings.record("llama-cpp-python wheel build", took, self.rc == 0, background=True,
                       note="in the background, while the environments installed")
        output = self.log.read_text().strip()
        if self.rc != 0:
            raise SetupError(f"the llama-cpp-python build failed (exit {self.rc}); its output ({self.log}):\n"
                             f"{output[-4000:]}")
        print(f"setup: llama-cpp-python wheel built in {took:.0f} s (in the background)", flush=True)

    def stop(self) -> None:
        """End the build and everything it started (compiler processes included)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.thread.join(timeout=5)


def wheel_cached() -> bool:
    """True when the portable llama-cpp-python wheel for the pinned version and this machine's flags exists."""
    out = wheelhouse.wheel_dir(wheelhouse.cmake_args())
    return any(out.glob(f"llama_cpp_python-{wheelhouse.pinned_version()}-*.whl"))


def link_wheelhouse() -> None:
    """Point build/wheelhouse at the cached wheel (tools/wheelhouse.py does only that when the wheel exists)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "wheelhouse.py")], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SetupError(f"tools/wheelhouse.py failed: {(proc.stdout + proc.stderr).strip()[-2000:]}")


# ---------------------------------------------------------------- the steps


def requirements_without_llama(env: Env) -> Path:
    """The workshop's requirement file less llama-cpp-python: what can install before the wheel exists."""
    out = ROOT / "build" / "envs" / "workshop-without-llama-cpp-python.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [line for line in (ROOT / env.requirements).read_text().splitlines() if not LLAMA.match(line.strip())]
    out.write_text("\n".join(lines) + "\n")
    return out


def wheel_args() -> list[str]:
    """llama-cpp-python only as the wheel of build/wheelhouse, never built from PyPI's sdist."""
    return ["--only-binary", "llama-cpp-python", "--find-links", str(ROOT / "build" / "wheelhouse")]


def install_env(installer: Installer, env: Env, wheel_ready: bool = True) -> None:
    """Create and fill one environment; the workshop's gets everything but llama-cpp-python until `wheel_ready`."""
    installer.create(env)
    if env.workshop and not wheel_ready:
        installer.install(env, ["-r", str(requirements_without_llama(env))])
        installer.install(env, ["--no-deps", "--no-build-isolation", "-e", str(ROOT)])
        return
    installer.install(env, [*(wheel_args() if env.workshop else []), "-r", str(ROOT / env.requirements)],
                      last=not env.workshop)
    if env.workshop:  # the forced reinstall always installs something, so uv's compile step runs with it
        installer.install(env, ["--no-deps", "--no-build-isolation", "-e", str(ROOT)])
        reinstall_wheel(installer, env, last=True)
    mark_installed(env)


def reinstall_wheel(installer: Installer, env: Env, last: bool = False) -> None:
    """Install the wheelhouse's llama-cpp-python over the one there: the same version built with other CPU flags
    is another wheel, which an installer that compares versions only would keep (a few seconds)."""
    installer.install(env, [*wheel_args(), "--force-reinstall", "--no-deps",
                            f"llama-cpp-python=={wheelhouse.pinned_version()}"], last=last)


def add_wheel(installer: Installer, env: Env) -> None:
    """The workshop environment's last step once the wheel exists: its whole requirement file, llama-cpp-python
    included (everything else is already there, so this checks the full set and installs the wheel)."""
    installer.install(env, [*wheel_args(), "-r", str(ROOT / env.requirements)])
    reinstall_wheel(installer, env, last=True)
    mark_installed(env)


def mark_installed(env: Env) -> None:
    """Replace the environment's old stamps by the current one."""
    for old in env.dir.glob(".installed*"):
        old.unlink()
    env.stamp().touch()


def fetch_models(env: Env) -> None:
    """Fetch or assemble the models and verify their checksums (needs no llama.cpp: it runs before the wheel)."""
    proc = subprocess.run([str(env.python), "-m", "helpers.layers.models", "fetch"], cwd=ROOT)
    if proc.returncode != 0:
        raise SetupError("fetching the models failed (see above); re-run `make models` once the cause is fixed")


def timed(name: str, func, *args, **kwargs) -> None:  # noqa: ANN001 - a step and its arguments
    """Run one step, print and record its seconds."""
    start = time.monotonic()
    with timings.phase(name):
        func(*args, **kwargs)
    print(f"setup: {name}: {time.monotonic() - start:.0f} s", flush=True)


def install(names: list[str], models: bool = False) -> int:
    """Install the named environments (the wheel built alongside when needed), then the models if asked."""
    unknown = [n for n in names if n not in ENVS]
    if unknown:
        raise SetupError(f"unknown environment(s) {unknown}; known: {', '.join(ENVS)}")
    if sys.version_info[:2] != (3, 11):
        raise SetupError(f"Python 3.11 is required to create the environments; this is {sys.version.split()[0]}.\n"
                         "Fix: make PYTHON_BASE=/path/to/python3.11 ...")
    todo = [ENVS[n] for n in names if not ENVS[n].stamp().exists()]
    for env in (ENVS[n] for n in names if ENVS[n].stamp().exists()):
        print(f"setup: {env.path} is up to date ({env.stamp().name})")
    workshop = next((e for e in todo if e.workshop), None)
    build = None
    try:
        if workshop and not wheel_cached():
            print("setup: building llama-cpp-python in the background (portable flags; about 5 min on 2 cores; "
                  f"log: {LOG})", flush=True)
            build = WheelBuild()
        elif workshop:
            link_wheelhouse()
        if todo:
            with timings.phase("installer"):
                installer = Installer()
        for env in ([workshop] if workshop else []) + [e for e in todo if e is not workshop]:
            print(f"setup: {env.path} <- {env.requirements} with {installer.describe()} ({env.purpose})", flush=True)
            timed(f"environment {env.path}", install_env, installer, env, wheel_ready=not (env is workshop and build))
            if env is workshop and models:
                timed("models", fetch_models, env)
        if build:
            build.join()
            build = None
            timed(f"environment {workshop.path}: llama-cpp-python", add_wheel, installer, workshop)
        if models and not workshop:
            timed("models", fetch_models, ENVS["workshop"])
    finally:
        if build and build.proc.poll() is None:
            print("setup: stopping the llama-cpp-python build", file=sys.stderr)
            build.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: install NAME... [--models] | uv | stamp NAME."""
    parser = argparse.ArgumentParser(prog="python3.11 tools/envs.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="create the named environments (skipped when their stamp is current)")
    p.add_argument("names", nargs="+", choices=list(ENVS))
    p.add_argument("--models", action="store_true", help="also fetch and verify the models (in .venv)")
    sub.add_parser("uv", help="print the path of the pinned uv (installing it once)")
    p = sub.add_parser("stamp", help="print an environment's stamp file")
    p.add_argument("name", choices=list(ENVS))
    args = parser.parse_args(argv)
    if args.cmd == "uv":
        print(uv_path())
        return 0
    if args.cmd == "stamp":
        print(ENVS[args.name].stamp().relative_to(ROOT))
        return 0
    return install(args.names, models=args.models)


if __name__ == "__main__":
    sys.exit(main())
