"""The rules hassfest and the HACS action apply that can be read from the tree.

Both validators run on GitHub (.github/workflows/validate.yml); these tests check the same
rules here, in this project's words: the manifest, the translations (no HTML, no URLs,
placeholders that are identifiers, the same keys and placeholders in French), the keys the
code uses, services and icons, brand images, licence, hacs.json and the quality scale.
"""

from __future__ import annotations

import ast
import json
import re
import string
import struct
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = ROOT / "custom_components" / "upr_faces"
DOMAIN = "upr_faces"


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _leaves(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string of a nested translation dictionary with its key path."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix, tree


def _placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


MANIFEST = _json(INTEGRATION / "manifest.json")
STRINGS = _json(INTEGRATION / "strings.json")
ENGLISH = _json(INTEGRATION / "translations" / "en.json")
FRENCH = _json(INTEGRATION / "translations" / "fr.json")

# hassfest's address pattern: a scheme (or www.) followed by a host with a dot
URL = re.compile(
    r"((ftp|ftps|scp|http|https|mqtt|mqtts|socket|socks5)://|www\.)"
    r"[a-z0-9]+([-.][a-z0-9]+)*\.[a-z]{2,5}(:[0-9]{1,5})?(/.*)?",
    re.IGNORECASE,
)
TRANSLATION_KEY = re.compile(r"^(?!.+[_-]{2})(?![_-])[a-z0-9-_]+(?<![_-])$")


# --------------------------------------------------------------------------- manifest


def test_manifest_keys_sorted_as_hassfest_wants() -> None:
    """domain, name, then every other key in alphabetical order."""
    keys = list(MANIFEST)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])


def test_manifest_content() -> None:
    """What hassfest requires of a custom integration's manifest."""
    assert MANIFEST["domain"] == INTEGRATION.name == DOMAIN
    Version(MANIFEST["version"])  # a version Home Assistant's loader accepts
    assert MANIFEST["documentation"].startswith("https://")
    assert not MANIFEST["documentation"].startswith("https://www.home-assistant.io/integrations")
    assert MANIFEST["issue_tracker"].startswith("https://")
    assert MANIFEST["codeowners"]
    assert all(owner.startswith("@") for owner in MANIFEST["codeowners"])
    assert MANIFEST["iot_class"] in {
        "assumed_state",
        "calculated",
        "cloud_polling",
        "cloud_push",
        "local_polling",
        "local_push",
    }
    assert MANIFEST["integration_type"] in {"device", "hub", "service"}
    assert MANIFEST["config_flow"] is True
    for line in MANIFEST["requirements"]:
        Requirement(line)  # PEP 508, as Home Assistant's installer reads it
    assert MANIFEST["loggers"] == [f"custom_components.{DOMAIN}"]


def test_manifest_pins_no_package_home_assistant_ships() -> None:
    """Packages Home Assistant ships itself take ranges, never an exact pin that fights
    its constraints file (the reason 2026.2 refused ``av==13.1.0``)."""
    shipped = {"av", "numpy", "pillow", "aiohttp"}
    for line in MANIFEST["requirements"]:
        requirement = Requirement(line)
        if requirement.name.lower() in shipped:
            assert not any(spec.operator == "==" for spec in requirement.specifier), line


# --------------------------------------------------------------------------- translations


def test_strings_json_is_english() -> None:
    """strings.json is the source; translations/en.json is its copy."""
    assert ENGLISH == STRINGS


@pytest.mark.parametrize("name", ["strings.json", "translations/en.json", "translations/fr.json"])
def test_translations_follow_hassfest(name: str) -> None:
    """No HTML, URLs, quoted or non-identifier placeholders, combined references, spaces
    around, and keys made of lower-case letters, digits, ``-`` and ``_``."""
    problems = []
    for path, text in _leaves(_json(INTEGRATION / name)):
        where = ".".join(path)
        if not isinstance(text, str):
            problems.append(f"{where}: not a string")
            continue
        if re.search(r"<[a-z/!][^>]*>", text, re.IGNORECASE):
            problems.append(f"{where}: HTML")
        if URL.search(text):
            problems.append(f"{where}: an address (use a placeholder)")
        if re.search(r"'\{\w+\}'", text):
            problems.append(f"{where}: a placeholder in single quotes")
        if any(not field.isidentifier() for field in _placeholders(text)):
            problems.append(f"{where}: a placeholder that is not an identifier")
        if re.search(r"(.+\[%)|(%\].+)", text):
            problems.append(f"{where}: a combined reference")
        if text != text.strip():
            problems.append(f"{where}: leading or trailing spaces")
        for key in path:
            if key != "_" and not TRANSLATION_KEY.match(key):
                problems.append(f"{where}: key {key!r}")
    assert problems == []


def test_french_has_every_english_string_with_the_same_placeholders() -> None:
    """Every text exists in both languages, with the same placeholders."""
    english = dict(_leaves(ENGLISH))
    french = dict(_leaves(FRENCH))
    assert set(french) == set(english)
    different = [
        ".".join(path)
        for path, text in english.items()
        if _placeholders(text) != _placeholders(french[path])
    ]
    assert different == []


def test_data_descriptions_describe_fields_of_their_step() -> None:
    """hassfest: every data_description key is a field of its step's data."""
    wrong = []
    for section in [STRINGS["config"], STRINGS["options"], *STRINGS["config_subentries"].values()]:
        for step_id, step in section.get("step", {}).items():
            for key in step.get("data_description", {}):
                if key not in step.get("data", {}):
                    wrong.append(f"{step_id}.{key}")
    assert wrong == []


# --------------------------------------------------------------------------- keys in code


def _code_strings(function: str, keyword: str) -> set[str]:
    """Literal values given to ``keyword=`` in calls of ``function`` in the integration."""
    found: set[str] = set()
    for path in INTEGRATION.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if function not in (name, "*"):
                continue
            for item in node.keywords:
                if item.arg == keyword and isinstance(item.value, ast.Constant):
                    found.add(str(item.value.value))
    return found


def test_exception_and_issue_keys_exist() -> None:
    """Every translation key the code raises or files an issue with is translated."""
    used_keys = _code_strings("*", "translation_key")
    known = (
        set(STRINGS["exceptions"])
        | set(STRINGS["issues"])
        | set(STRINGS["device"])
        | {key for platform in STRINGS["entity"].values() for key in platform}
    )
    assert used_keys - known == set()
    assert len(used_keys & set(STRINGS["exceptions"])) > 3  # the scan finds what it checks


def test_flow_errors_and_aborts_exist() -> None:
    """Every error and abort reason the flows use is translated where it is shown."""
    source = (INTEGRATION / "config_flow.py").read_text(encoding="utf-8")
    errors = set(re.findall(r'errors\[[^\]]+\] = "(\w+)"', source))
    aborts = _code_strings("async_abort", "reason")
    translated_errors = set(STRINGS["config"]["error"]) | set(
        STRINGS["config_subentries"]["camera"]["error"]
    )
    translated_aborts = set(STRINGS["config"]["abort"]) | set(
        STRINGS["config_subentries"]["camera"]["abort"]
    )
    for issue in STRINGS["issues"].values():  # the repair issues' fix flows
        translated_aborts |= set(issue.get("fix_flow", {}).get("abort", {}))
    assert errors
    assert errors - translated_errors - set(STRINGS["options"].get("error", {})) == set()
    assert aborts - translated_aborts == set()


def test_services_are_described_translated_and_have_icons() -> None:
    """services.yaml, the translated names and the icons name the same services."""
    services = yaml.safe_load((INTEGRATION / "services.yaml").read_text(encoding="utf-8"))
    icons = _json(INTEGRATION / "icons.json")
    assert set(services) == set(STRINGS["services"]) == set(icons["services"])
    for name, service in services.items():
        assert set(service.get("fields", {})) == set(STRINGS["services"][name]["fields"]), name
    entity_icons = {(p, k) for p, keys in icons["entity"].items() for k in keys}
    entity_strings = {(p, k) for p, keys in STRINGS["entity"].items() for k in keys}
    assert entity_icons <= entity_strings


# --------------------------------------------------------------------------- repository


def test_brand_images() -> None:
    """The brand icons HACS and Home Assistant show: 256x256 and 512x512 PNG."""
    for name, size in (("icon.png", 256), ("icon@2x.png", 512)):
        data = (INTEGRATION / "brand" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert struct.unpack(">II", data[16:24]) == (size, size), name


def test_licence() -> None:
    """The HACS action needs a LICENSE; the packages' metadata say the same (MIT)."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    for project in (INTEGRATION / "engine", ROOT / "tools"):
        metadata = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        assert metadata["project"]["license"] == {"text": "MIT"}, project


def test_validation_workflow_runs_hassfest_and_hacs() -> None:
    """The workflow every HACS integration carries."""
    workflow = yaml.safe_load(
        (ROOT / ".github" / "workflows" / "validate.yml").read_text(encoding="utf-8")
    )
    uses = {
        step.get("uses", "").split("@")[0]
        for job in workflow["jobs"].values()
        for step in job["steps"]
    }
    assert {"home-assistant/actions/hassfest", "hacs/action"} <= uses
    hacs = next(
        step
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("hacs/action")
    )
    assert hacs["with"]["category"] == "integration"


def test_supported_versions_agree() -> None:
    """hacs.json's minimum is the oldest Home Assistant the tests run on, and the README
    names both tested releases."""
    hacs = _json(ROOT / "hacs.json")
    assert hacs["name"] == MANIFEST["name"]
    assert hacs["content_in_root"] is False
    oldest = _pinned("requirements_ha_oldest.txt")
    newest = _pinned("requirements_ha_newest.txt")
    assert Version(hacs["homeassistant"]) <= Version(oldest)
    assert Version(hacs["homeassistant"]).release[:2] == Version(oldest).release[:2]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert oldest in readme
    assert newest in readme


def _pinned(requirements: str) -> str:
    text = (ROOT / requirements).read_text(encoding="utf-8")
    found = re.search(r"^homeassistant==([\w.]+)$", text, re.MULTILINE)
    assert found, requirements
    return found.group(1)


# --------------------------------------------------------------------------- quality scale

TIERS: dict[str, tuple[str, ...]] = {
    "bronze": (
        "action-setup",
        "appropriate-polling",
        "brands",
        "common-modules",
        "config-flow",
        "config-flow-test-coverage",
        "dependency-transparency",
        "docs-actions",
        "docs-conditions",
        "docs-high-level-description",
        "docs-installation-instructions",
        "docs-removal-instructions",
        "docs-triggers",
        "entity-event-setup",
        "entity-unique-id",
        "has-entity-name",
        "runtime-data",
        "test-before-configure",
        "test-before-setup",
        "unique-config-entry",
    ),
    "silver": (
        "action-exceptions",
        "config-entry-unloading",
        "docs-configuration-parameters",
        "docs-installation-parameters",
        "entity-unavailable",
        "integration-owner",
        "log-when-unavailable",
        "parallel-updates",
        "reauthentication-flow",
        "test-coverage",
    ),
    "gold": (
        "devices",
        "diagnostics",
        "discovery",
        "discovery-update-info",
        "docs-data-update",
        "docs-examples",
        "docs-known-limitations",
        "docs-supported-devices",
        "docs-supported-functions",
        "docs-troubleshooting",
        "docs-use-cases",
        "dynamic-devices",
        "entity-category",
        "entity-device-class",
        "entity-disabled-by-default",
        "entity-translations",
        "exception-translations",
        "icon-translations",
        "reconfiguration-flow",
        "repair-issues",
        "stale-devices",
    ),
    "platinum": ("async-dependency", "inject-websession", "strict-typing"),
}


def _status(rule: Any) -> str:
    return str(rule if isinstance(rule, str) else rule["status"])


def test_quality_scale_names_the_level_reached() -> None:
    """Every rule has a status (an exemption or a to-do says why); the manifest's level is
    the highest tier whose rules, and those of the tiers below, are all done or exempt."""
    rules = yaml.safe_load((INTEGRATION / "quality_scale.yaml").read_text(encoding="utf-8"))[
        "rules"
    ]
    assert set(rules) == {rule for tier in TIERS.values() for rule in tier}
    for name, rule in rules.items():
        assert _status(rule) in {"done", "exempt", "todo"}, name
        if _status(rule) != "done":
            assert isinstance(rule, dict), name
            assert rule.get("comment"), name
    reached = "custom"
    for tier, names in TIERS.items():
        if any(_status(rules[name]) == "todo" for name in names):
            break
        reached = tier
    assert MANIFEST["quality_scale"] == reached


def test_engine_and_integration_versions_agree() -> None:
    """One release: the integration and the engine it starts carry the same version."""
    engine = tomllib.loads((INTEGRATION / "engine" / "pyproject.toml").read_text(encoding="utf-8"))
    tools = tomllib.loads((ROOT / "tools" / "pyproject.toml").read_text(encoding="utf-8"))
    assert engine["project"]["version"] == MANIFEST["version"] == tools["project"]["version"]
