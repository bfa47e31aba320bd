"""The integration imports nothing heavy: it installs on every Home Assistant.

Home Assistant OS and the official container run on Alpine (musl), where ONNX Runtime and
OpenCV have no wheels. Every module of the integration is imported in a fresh interpreter
where ``onnxruntime`` and ``cv2`` cannot be imported at all, and every import statement the
integration's own modules run is recorded: none may reach numpy, av, OpenCV, ONNX Runtime
or the engine's package (Home Assistant's own camera component imports numpy, so numpy
and av cannot simply be blocked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTEGRATION = ROOT / "custom_components" / "upr_faces"
HEAVY = ("numpy", "av", "cv2", "onnxruntime", "upr_faces_engine")

PROBE = r"""
import builtins, importlib, importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnxruntime", "cv2"):
            raise ImportError(f"{name} is not installed here (as on Alpine)")
        return None

sys.meta_path.insert(0, Blocked())
seen = []
real_import = builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if importer.startswith("custom_components.upr_faces"):
        package = (globals or {}).get("__package__") or ""
        target = importlib.util.resolve_name("." * level + name, package) if level else name
        seen.append([importer, target, list(fromlist or ())])
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import
loaded, failed = [], {}
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
        loaded.append(module)
    except Exception as err:  # noqa: BLE001
        failed[module] = f"{type(err).__name__}: {err}"
builtins.__import__ = real_import
ours = sorted(m for m in sys.modules if m.startswith("custom_components.upr_faces"))
print(json.dumps({"loaded": loaded, "failed": failed, "imports": seen, "modules": ours}))
"""


def _modules() -> list[str]:
    names = ["custom_components.upr_faces"]
    for path in sorted(INTEGRATION.glob("*.py")):
        if path.stem != "__init__":
            names.append(f"custom_components.upr_faces.{path.stem}")
    return names


def test_every_module_imports_without_heavy_packages() -> None:
    modules = _modules()
    assert "custom_components.upr_faces.config_flow" in modules
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert report["loaded"] == modules
    heavy = [
        (importer, target)
        for importer, target, _names in report["imports"]
        if target.split(".")[0] in HEAVY
    ]
    assert heavy == [], heavy
    # the engine's code ships inside the integration's folder but is never imported
    assert not [m for m in report["modules"] if m.startswith("custom_components.upr_faces.engine")]
    # the recording saw the integration's imports (it would pass vacuously otherwise)
    targets = {target for _importer, target, _names in report["imports"]}
    assert "aiohttp" in targets
    assert "custom_components.upr_faces.client" in targets


def test_manifest_requires_nothing_heavy() -> None:
    """Nothing for Home Assistant's installer: the engine's packages go into the engine's
    own environment (embedded), the add-on's image or the engine's host."""
    manifest = json.loads((INTEGRATION / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["requirements"] == []
