"""requirements.lock is what pyproject.toml asks for, and it is what is installed.

`make lock` writes the lock from pyproject.toml (uv pip compile); `make setup`, `.ci/run` and
environment.yml install exactly it. These tests fail when the two files disagree (a requirement
added, dropped or re-ranged without `make lock`) or when the running environment is not the lock.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PROJECT = "vit-pretraining (pyproject.toml)"
ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?: ; (?P<marker>.+?))?"
                   r" \\$")


@dataclass
class Pin:
    version: str
    marker: str | None
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def read_lock(text: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    current = None
    for line in text.splitlines():
        if m := ENTRY.match(line):
            current = pins.setdefault(canonicalize_name(m["name"]),
                                      Pin(m["version"], m["marker"]))
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            current.hashes += 1
        elif current is not None and (m := re.match(r"^\s+#\s+(?:via\b)?\s*(.*)$", line)):
            current.via |= {m[1].strip()} - {""}
        elif line and not line.startswith((" ", "#")):
            pytest.fail(f"requirements.lock: unexpected line {line!r}")
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(r) for r in reqs]


@pytest.fixture(scope="module")
def pins() -> dict[str, Pin]:
    return read_lock(LOCK.read_text())


def test_every_requirement_is_pinned_inside_its_range(pins):
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"pyproject.toml requires {req} but requirements.lock lacks it: make lock"
        assert req.specifier.contains(pins[name].version, prereleases=True), (
            f"pyproject.toml requires {req}, requirements.lock pins {pins[name].version}: make lock")


def test_lock_lists_no_direct_requirement_pyproject_dropped(pins):
    direct = {name for name, pin in pins.items() if PROJECT in pin.via}
    wanted = {canonicalize_name(r.name) for r in project_requirements()}
    assert direct == wanted, f"lock and pyproject.toml differ: {sorted(direct ^ wanted)}: make lock"


def test_every_pin_is_exact_and_hashed(pins):
    assert len(pins) > 100  # the whole transitive closure, not just the direct requirements
    for name, pin in pins.items():
        assert pin.hashes >= 1, f"requirements.lock: {name} has no hash"
        assert pin.via, f"requirements.lock: {name} says nothing of why it is there"


def test_installed_environment_is_the_lock(pins):
    wrong = []
    for name, pin in pins.items():
        if pin.marker and not Marker(pin.marker).evaluate():
            continue  # another platform's package
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != pin.version:
            wrong.append(f"{name} {installed} (lock: {pin.version})")
    assert not wrong, f"this environment is not requirements.lock: {', '.join(wrong)}; make setup"


def test_parser_reads_uv_format_and_refuses_stray_lines():
    text = ("# header\n"
            "a-b==1.0 ; sys_platform == 'linux' \\\n    --hash=sha256:00\n"
            "    # via\n    #   c\n    #   vit-pretraining (pyproject.toml)\n"
            "c==2 \\\n    --hash=sha256:11 \\\n    --hash=sha256:22\n    # via a-b\n")
    pins = read_lock(text)
    assert pins["a-b"] == Pin("1.0", "sys_platform == 'linux'", 1, {"c", PROJECT})
    assert pins["c"] == Pin("2", None, 2, {"a-b"})
    with pytest.raises(pytest.fail.Exception, match="unexpected line"):
        read_lock("d>=1\n")
