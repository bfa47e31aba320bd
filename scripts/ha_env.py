"""What the test environments of both Home Assistants are made of (standard library only).

Used by ``scripts/bootstrap`` (the oldest Home Assistant, in ``.venv``), ``scripts/ha_root``
(the newest, in a Debian sid root) and the tests that check the manifest's requirements::

    python scripts/ha_env.py version requirements_ha_oldest.txt
    python scripts/ha_env.py python-version requirements_ha_newest.txt
    python scripts/ha_env.py constraints 2026.10.4 3.14.10 OUT.txt
    python scripts/ha_env.py manifest-requirements
    python scripts/ha_env.py engine-requirements
    python scripts/ha_env.py component-requirements      # with the environment's Python

Home Assistant installs a custom integration's requirements with its own
``package_constraints.txt`` (inside its wheel): the tests install theirs the same way.
Home Assistant 2026 no longer installs some packages itself that the components the tests
load import (hassil, mutagen, PyTurboJPEG, gazetteer-matcher...): ``component-requirements``
lists the requirements of those components, read from the installed Home Assistant's own
manifests, so they come at the versions that release pins.

The tests also run the engine (``upr-faces serve`` processes, the embedded engine on the
test interpreter, the engine's own unit tests) in the same environment: its dependencies
(``engine-requirements``, the ranges of its ``pyproject.toml``) are installed there under
Home Assistant's constraints too. A real embedded engine gets an environment of its own
with the pins of ``engine/requirements.txt``, which the packaging tests check separately.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "custom_components" / "upr_faces" / "manifest.json"
ENGINE_PROJECT = ROOT / "custom_components" / "upr_faces" / "engine" / "pyproject.toml"

# Python versions each Home Assistant line runs on (the newest its Requires-Python admits).
PYTHON_FOR = {"2025": "3.13", "2026": "3.14.10"}

# The components the tests and the demo set up, besides the integration's own
# dependencies and platforms: the configuration of scripts/hass_demo.py, and those the
# frontend's service descriptions import (Home Assistant's ``helpers.service``).
EXTRA_COMPONENTS = (
    "ai_task",
    "api",
    "assist_pipeline",
    "assist_satellite",
    "config",
    "conversation",
    "frontend",
    "history",
    "logbook",
    "lovelace",
    "onboarding",
    "system_health",
)


def ha_version(requirements: Path) -> str:
    """The ``homeassistant==X`` pin of a requirements file."""
    for line in requirements.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\s*homeassistant==([\w.]+)", line)
        if found:
            return found.group(1)
    raise SystemExit(f"{requirements}: no homeassistant==VERSION line")


def python_version(version: str) -> str:
    """The Python a Home Assistant release runs on, for resolving its requirements."""
    return PYTHON_FOR.get(version.split(".")[0], "3.14.10")


def fetch_constraints(version: str, python: str, out: Path) -> Path:
    """Write Home Assistant ``version``'s package_constraints.txt to ``out``."""
    if out.is_file() and out.stat().st_size:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                python,
                f"homeassistant=={version}",
                "-d",
                tmp,
            ],
            check=True,
            stdout=sys.stderr,
        )
        wheel = next(Path(tmp).glob("homeassistant-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read("homeassistant/package_constraints.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def manifest() -> dict[str, object]:
    """The integration's manifest.json."""
    data: dict[str, object] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data


def manifest_requirements() -> list[str]:
    """The integration's requirements, as Home Assistant installs them."""
    requirements = manifest().get("requirements", [])
    assert isinstance(requirements, list)
    return [str(item) for item in requirements]


def engine_requirements() -> list[str]:
    """The engine's dependencies (the ranges of its pyproject.toml)."""
    project = tomllib.loads(ENGINE_PROJECT.read_text(encoding="utf-8"))["project"]
    return [str(item) for item in project["dependencies"]]


def _integration_platforms() -> set[str]:
    folder = MANIFEST.parent
    source = (folder / "__init__.py").read_text(encoding="utf-8")
    return {name.lower() for name in re.findall(r"Platform\.([A-Z_]+)", source)}


def component_requirements() -> list[str]:
    """Requirements of the components the tests load, from the installed Home Assistant."""
    import homeassistant.components

    components = Path(homeassistant.components.__path__[0])
    own = manifest()
    wanted: list[str] = [
        *[str(d) for d in own.get("dependencies", [])],  # type: ignore[attr-defined]
        *[str(d) for d in own.get("after_dependencies", [])],  # type: ignore[attr-defined]
        *sorted(_integration_platforms()),
        *EXTRA_COMPONENTS,
    ]
    seen: set[str] = set()
    requirements: list[str] = []
    while wanted:
        domain = wanted.pop()
        if domain in seen:
            continue
        seen.add(domain)
        path = components / domain / "manifest.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        requirements.extend(data.get("requirements", []))
        wanted.extend(data.get("dependencies", []))
    return sorted(set(requirements), key=str.lower)


def main(argv: list[str]) -> int:
    """Command line: see the module docstring."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, *args = argv
    if command == "version":
        print(ha_version(Path(args[0])))
    elif command == "python-version":
        print(python_version(ha_version(Path(args[0]))))
    elif command == "constraints":
        fetch_constraints(args[0], args[1], Path(args[2]))
    elif command == "manifest-requirements":
        print("\n".join(manifest_requirements()))
    elif command == "engine-requirements":
        print("\n".join(engine_requirements()))
    elif command == "component-requirements":
        print("\n".join(component_requirements()))
    else:
        print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
