"""tools/envs.py (the environments with uv, the wheel built alongside) and tools/timings.py, without installing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import envs  # noqa: E402 - tools/ is not a package
import pins  # noqa: E402
import timings  # noqa: E402


@pytest.fixture
def timings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "timings.jsonl"
    monkeypatch.setattr(timings, "TIMINGS", path)
    monkeypatch.setenv(timings.RUN_VAR, "test-run")
    monkeypatch.setenv(timings.KIND_VAR, "workshop")
    monkeypatch.delenv(timings.PARENT_VAR, raising=False)
    return path


def test_uv_is_pinned_and_every_environment_is_seeded_the_same_way():
    tools = envs.tool_pins()
    assert set(tools) == {"uv", "pip", "setuptools"}
    assert envs.seed_pins() == [f"pip=={tools['pip']}", f"setuptools=={tools['setuptools']}"]


def test_every_requirement_file_has_its_environment():
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "requirements").glob("*.txt")} - {"requirements/tools.txt"}
    assert {e.requirements for e in envs.ENVS.values()} == files
    assert envs.ENVS["workshop"].requirements == "requirements/workshop.txt"
    assert pins.LOCK == ROOT / envs.ENVS["workshop"].requirements, "environment.yml mirrors what .venv installs"


def test_stamp_is_the_one_the_makefile_wrote():
    """The pinned set's files (and, for the workshop's, the llama.cpp build flags: a new build is installed)."""
    env = envs.ENVS["workshop"]
    digest = hashlib.sha256((ROOT / "requirements/workshop.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes()
                            + envs.wheelhouse.cmake_args().encode())
    assert env.stamp() == ROOT / ".venv" / f".installed-{digest.hexdigest()[:12]}"
    litellm = hashlib.sha256((ROOT / "requirements/litellm.txt").read_bytes()).hexdigest()[:12]
    assert envs.ENVS["litellm"].stamp().name == f".installed-{litellm}"


def test_workshop_set_without_the_wheel_is_everything_else():
    lines = (ROOT / "requirements/workshop.txt").read_text().splitlines()
    rest = envs.requirements_without_llama(envs.ENVS["workshop"]).read_text().splitlines()
    assert [line for line in lines if line not in rest] == [next(x for x in lines if x.startswith("llama-cpp-python"))]


PIP_CONFIG_LIST = """\
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/opt/global-wheels'
:env:.find-links='/opt/wheels'
:env:.default-timeout='180'
"""


def test_uv_gets_the_package_sources_pip_has(monkeypatch: pytest.MonkeyPatch):
    def fake_run(cmd, **_):
        assert cmd[1:] == ["-m", "pip", "config", "list"]
        return subprocess.CompletedProcess(cmd, 0, PIP_CONFIG_LIST, "")

    monkeypatch.setattr(envs.subprocess, "run", fake_run)
    settings = envs.pip_settings("python")
    assert settings["find-links"] == "/opt/wheels", "PIP_* variables win over pip.conf, as in pip"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("UV_HTTP_TIMEOUT", raising=False)
    args, env = envs.uv_source_args(settings)
    assert args == ["--extra-index-url", "file:///opt/a/simple", "--extra-index-url", "file:///opt/b/simple",
                    "--find-links", "/opt/wheels", "--constraint", "/etc/xdg/pip/constraints.txt",
                    "--index-strategy", "unsafe-best-match"]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "UV_HTTP_TIMEOUT": "180"}
    assert envs.uv_source_args({}) == ([], {}), "no pip settings: uv's defaults (PyPI)"


class FakeInstaller:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def describe(self) -> str:
        return "fake"

    def create(self, env: envs.Env) -> None:
        env.dir.mkdir(parents=True, exist_ok=True)
        self.log.append(f"create {env.name}")

    def install(self, env: envs.Env, args: list[str], last: bool = False) -> None:
        shown = [Path(a).name if "/" in a else a for a in args]
        self.log.append(f"install {env.name} {' '.join(shown)}" + (" [+bytecode]" if last else ""))


class FakeBuild:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail
        self.proc = type("P", (), {"poll": staticmethod(lambda: 0)})()
        log.append("build started")

    def join(self) -> None:
        self.log.append("build joined")
        if self.fail:
            raise envs.SetupError("the llama-cpp-python build failed (exit 1)")

    def stop(self) -> None:
        self.log.append("build stopped")


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timings_file: Path) -> list[str]:
    """ENVS pointing into tmp_path, a fake installer and build; returns the log of what happened, in order."""
    log: list[str] = []
    (tmp_path / "requirements").mkdir()
    for name in ("workshop", "litellm"):
        (tmp_path / "requirements" / f"{name}.txt").write_text(f"{name}-pin==1\nllama-cpp-python[server]==0.3.36\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    monkeypatch.setattr(envs, "ROOT", tmp_path)
    monkeypatch.setattr(envs, "ENVS", {n: envs.ENVS[n] for n in ("workshop", "litellm")})
    monkeypatch.setattr(envs, "Installer", lambda: FakeInstaller(log))
    monkeypatch.setattr(envs, "fetch_models", lambda env: log.append(f"models with {env.name}"))
    monkeypatch.setattr(envs, "link_wheelhouse", lambda: log.append("wheel linked"))
    return log


def test_the_wheel_builds_while_the_environments_install(fake_root: list[str], monkeypatch: pytest.MonkeyPatch,
                                                         timings_file: Path):
    monkeypatch.setattr(envs, "wheel_cached", lambda: False)
    monkeypatch.setattr(envs, "WheelBuild", lambda: FakeBuild(fake_root))
    assert envs.install(["workshop", "litellm"], models=True) == 0
    assert fake_root == [
        "build started",
        "create workshop", "install workshop -r workshop-without-llama-cpp-python.txt",
        "install workshop --no-deps --no-build-isolation -e " + envs.ROOT.name,
        "models with workshop",
        "create litellm", "install litellm -r litellm.txt [+bytecode]",
        "build joined",
        "install workshop --only-binary llama-cpp-python --find-links wheelhouse -r workshop.txt",
        "install workshop --only-binary llama-cpp-python --find-links wheelhouse --force-reinstall --no-deps "
        "llama-cpp-python==" + envs.wheelhouse.pinned_version() + " [+bytecode]",
    ], "each environment is compiled to bytecode once, with its last install"
    assert all(e.stamp().exists() for e in envs.ENVS.values())
    phases = [r["phase"] for r in timings.read()]
    assert phases == ["installer", "environment .venv", "models", "environment .venvs/litellm",
                      "environment .venv: llama-cpp-python"]


def test_a_failed_build_fails_the_setup_and_leaves_the_workshop_environment_unstamped(
        fake_root: list[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(envs, "wheel_cached", lambda: False)
    monkeypatch.setattr(envs, "WheelBuild", lambda: FakeBuild(fake_root, fail=True))
    with pytest.raises(SystemExit, match="llama-cpp-python build failed"):
        envs.install(["workshop", "litellm"])
    assert not envs.ENVS["workshop"].stamp().exists()
    assert envs.ENVS["litellm"].stamp().exists(), "what could install did"


def test_a_cached_wheel_is_installed_at_once_and_a_current_environment_is_left_alone(
        fake_root: list[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(envs, "wheel_cached", lambda: True)
    envs.ENVS["litellm"].dir.mkdir(parents=True)
    envs.ENVS["litellm"].stamp().touch()
    envs.install(["workshop", "litellm"])
    assert fake_root == ["wheel linked", "create workshop",
                         "install workshop --only-binary llama-cpp-python --find-links wheelhouse -r workshop.txt",
                         "install workshop --no-deps --no-build-isolation -e " + envs.ROOT.name,
                         "install workshop --only-binary llama-cpp-python --find-links wheelhouse --force-reinstall "
                         "--no-deps llama-cpp-python==" + envs.wheelhouse.pinned_version() + " [+bytecode]"]


def test_background_build_reports_its_own_failure(tmp_path: Path, timings_file: Path):
    script = "import sys, time; print('compiling ggml ...'); sys.exit('Fix: install a C/C++ compiler and cmake')"
    build = envs.WheelBuild([sys.executable, "-c", script], log=tmp_path / "wheel.log")
    with pytest.raises(SystemExit) as failed:
        build.join()
    assert "build failed (exit 1)" in str(failed.value) and "Fix: install a C/C++ compiler" in str(failed.value)
    assert "compiling ggml" in str(failed.value)
    assert [(r["phase"], r["ok"]) for r in timings.read()] == [("waiting for the wheel", True),
                                                                ("llama-cpp-python wheel build", False)]


def test_background_build_can_be_stopped_with_its_children(tmp_path: Path, timings_file: Path):
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
             "time.sleep(60)"
    build = envs.WheelBuild([sys.executable, "-c", script], log=tmp_path / "wheel.log")
    build.stop()
    assert build.proc.poll() is not None


# ---------------------------------------------------------------- timings


def test_a_run_is_recorded_phase_by_phase_with_its_total(timings_file: Path):
    timings.begin()
    with timings.phase("set-up"):
        timings.record("environment .venv", 12.0, parent="set-up")
    assert timings.run_command("notebooks", [sys.executable, "-c", "pass"]) == 0
    assert timings.run_command("book", [sys.executable, "-c", "raise SystemExit(3)"]) == 3
    timings.finish(3)
    records = timings.last_run("workshop")
    assert [r["phase"] for r in records] == ["begin", "environment .venv", "set-up", "notebooks", "book", "total"]
    assert all(r["run"] == "test-run" and "load1" in r and r["cores"] for r in records)
    table = "\n".join(timings.breakdown(records))
    assert table.index("set-up") < table.index("environment .venv"), "a phase is listed before what ran inside it"
    assert "goal <= 300 s: ok" in table and "FAILED" in table
    assert json.loads(timings_file.read_text().splitlines()[-1])["ok"] is False


def test_unfinished_runs_are_not_taken_for_the_last_one(timings_file: Path, monkeypatch: pytest.MonkeyPatch):
    timings.begin()
    timings.finish(0)
    monkeypatch.setenv(timings.RUN_VAR, "interrupted")
    timings.begin()
    timings.record("set-up", 5)
    assert timings.last_run("workshop")[0]["run"] == "test-run"
    assert timings.last_run("workshop", complete=False)[0]["run"] == "interrupted"


@pytest.mark.parametrize("kind", ["uv", "pip"])
def test_uv_and_pip_install_the_same_files_with_the_same_options(kind: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORKSHOP_INSTALLER", kind)
    monkeypatch.setattr(envs, "uv_path", lambda: Path("/cache/uv"))
    monkeypatch.setattr(envs, "pip_python", lambda: sys.executable)
    monkeypatch.setattr(envs, "pip_settings", lambda python: {"find-links": "/opt/wheels"})
    ran: list[list[str]] = []
    monkeypatch.setattr(envs.Installer, "run", lambda self, cmd, what: ran.append(cmd))
    installer = envs.Installer()
    env = envs.ENVS["workshop"]
    installer.install(env, [*envs.wheel_args(), "-r", "requirements/workshop.txt"])
    installer.install(env, ["-e", "."], last=True)
    cmd, last = ran
    assert ("--compile-bytecode" in last) == (kind == "uv"), "uv compiles once, at the end; pip compiles as it installs"
    assert "--compile-bytecode" not in cmd
    tail = ["--only-binary", "llama-cpp-python", "--find-links", str(ROOT / "build" / "wheelhouse"),
            "-r", "requirements/workshop.txt"]
    assert cmd[-len(tail):] == tail
    if kind == "uv":
        assert cmd[:5] == ["/cache/uv", "pip", "install", "--quiet", "--python"]
        assert ["--find-links", "/opt/wheels"] == cmd[6:8], "pip's own sources, passed on to uv"
    else:
        assert cmd[:4] == [str(env.python), "-m", "pip", "install"], "pip reads its configuration itself"


def test_llama_cpp_flags_add_the_avx512_kernels_the_cpu_has_and_never_amx(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    wheelhouse = envs.wheelhouse
    avx2_only = {"avx", "avx2", "fma", "f16c", "bmi2"}
    sapphire = avx2_only | {"avx_vnni", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi",
                            "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}
    assert wheelhouse.x86_extensions(avx2_only) == ""
    assert wheelhouse.x86_extensions(sapphire) == ("-DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON "
                                                   "-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON")
    assert wheelhouse.x86_extensions({"avx512f", "avx512_vnni"}) == "-DGGML_AVX512_VNNI=ON"  # no BW/VL: no AVX512
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_int8\n\nprocessor\t: 1\n")
    assert wheelhouse.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "amx_int8"}
    assert wheelhouse.cpu_flags(tmp_path / "absent") == set()
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    monkeypatch.setattr(wheelhouse.platform, "system", lambda: "Linux")
    monkeypatch.setattr(wheelhouse.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(wheelhouse, "cpu_flags", lambda: sapphire)
    flags = wheelhouse.cmake_args()
    assert flags.startswith("-DGGML_NATIVE=OFF ") and "-DGGML_AVX512=ON" in flags and "AMX" not in flags
    assert wheelhouse.wheel_dir(flags) != wheelhouse.wheel_dir(wheelhouse.FLAGS[("Linux", "x86_64")]), \
        "another build, another wheel folder"
