"""One pinned dependency set: requirements/workshop.txt and environment.yml agree."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import pins  # noqa: E402


def test_environment_yml_installs_the_same_pins_as_pip():
    lock, conda = pins.lock_pins(), pins.conda_pins()
    assert lock, "requirements/workshop.txt pins nothing"
    assert lock == conda, sorted(set(lock.items()) ^ set(conda.items()))
    assert pins.conda_python() == "3.11"


def test_every_requirement_line_is_an_exact_pin():
    for path in (ROOT / "requirements").glob("*.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                assert pins.PIN.match(line), f"{path.name}: {line!r} is not pinned with =="


def test_direct_dependencies_are_in_the_lock():
    lock = pins.lock_pins()
    for line in (ROOT / "requirements" / "workshop.in").read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            base = pins.normalise(name.split("[")[0].split("<")[0].split(">")[0].split("=")[0])
            assert base in lock, f"{base} is a direct dependency but is not pinned in requirements/workshop.txt"


def test_the_installers_are_pinned_in_one_place():
    """uv, and the pip and setuptools every environment is seeded with, are pinned in requirements/tools.txt only."""
    import re

    tools = pins.parse_pins((ROOT / "requirements" / "tools.txt").read_text().splitlines())
    assert set(tools) == {"uv", "pip", "setuptools"}
    makefile = (ROOT / "Makefile").read_text()
    assert not re.search(r"\b(pip|uv|setuptools)==\d", makefile), "the Makefile takes versions from tools.txt"
    assert "requirements/tools.txt" in makefile
