"""The manifest's requirements install on every supported Home Assistant.

Home Assistant installs a custom integration's requirements with its own
``package_constraints.txt``: a pin that disagrees with it (``av==13.1.0`` against 2026's
``av==19.0.0``), or a package without wheels for its Python or its C library, fails the
set-up with "Requirements for upr_faces not found". uv resolves the manifest against the
oldest and the newest supported release's constraints, for their Python, both CPU kinds
and both C libraries (glibc, and musl: Home Assistant OS and the official container run on
Alpine), from the package index, wheels only, as Home Assistant's installer takes them.
The manifest lists nothing today (the engine's packages go into the engine's own
environment); the test keeps it so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import ha_env  # noqa: E402

PLATFORMS = (
    "x86_64-manylinux_2_28",
    "aarch64-manylinux_2_28",
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
)


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(found).exists():
        pytest.fail("uv is missing: run scripts/bootstrap")
    return found


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        found = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", line.strip())
        if found:
            pins[canonicalize_name(found.group(1).split("[")[0])] = found.group(2)
    return pins


def _compile(
    requirements: list[str], constraints: Path, python: str, platform: str, folder: Path
) -> subprocess.CompletedProcess[str]:
    wanted = folder / "requirements.txt"
    wanted.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    return subprocess.run(
        [
            _uv(),
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-annotate",
            str(wanted),
            "-c",
            str(constraints),
            "--python-version",
            python,
            "--python-platform",
            platform,
            "--only-binary",
            ":all:",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def _constraints(target: str) -> tuple[str, str, Path]:
    version = ha_env.ha_version(ROOT / f"requirements_ha_{target}.txt")
    python = ha_env.python_version(version)
    constraints = ha_env.fetch_constraints(
        version, python, ROOT / ".venv" / "constraints" / f"homeassistant-{version}.txt"
    )
    return version, python, constraints


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("target", ["oldest", "newest"])
def test_manifest_resolves_against_home_assistant_constraints(
    target: str, platform: str, tmp_path: Path
) -> None:
    version, python, constraints = _constraints(target)
    requirements = ha_env.manifest_requirements()
    result = _compile(requirements, constraints, python, platform, tmp_path)
    assert result.returncode == 0, f"Home Assistant {version} ({platform}): {result.stderr}"
    resolved = _pins(result.stdout)
    pinned_by_home_assistant = _pins(constraints.read_text(encoding="utf-8"))
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in resolved, line
        assert requirement.specifier.contains(resolved[name]), (line, resolved[name])
        if name in pinned_by_home_assistant:
            # what Home Assistant ships is taken as it ships it
            assert resolved[name] == pinned_by_home_assistant[name], line


@pytest.mark.parametrize("platform", ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"])
def test_the_musl_check_catches_what_alpine_cannot_install(platform: str, tmp_path: Path) -> None:
    """The resolution above would refuse the engine's ONNX Runtime (no musllinux wheels):
    the check is not vacuous."""
    _version, python, constraints = _constraints("newest")
    engine = ROOT / "custom_components" / "upr_faces" / "engine" / "requirements.txt"
    pins = [
        line for line in engine.read_text(encoding="utf-8").splitlines() if "onnxruntime" in line
    ]
    assert pins
    result = _compile(pins, constraints, python, platform, tmp_path)
    assert result.returncode != 0
    assert "onnxruntime" in result.stderr
