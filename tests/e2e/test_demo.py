"""The demo (``scripts/hass_demo.py``) in French, as ``scripts/demo --language fr`` runs it:
its dashboard names entities that exist (entity ids are made from translated names), and
a SIGTERM stops its Home Assistant with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..streams import free_port

ROOT = Path(__file__).resolve().parents[2]


def _running(config_dir: Path) -> list[int]:
    """Pids of processes whose command line names ``config_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(config_dir).encode() in command:
            found.append(int(entry.name))
    return found


@pytest.mark.usefixtures("socket_enabled")
def test_the_french_demo_names_real_entities_and_stops_whole(
    tmp_path: Path, test_pack: Path, faces_dir: Path
) -> None:
    config_dir = tmp_path / "hass"
    paths = [str(ROOT / "tools"), str(ROOT / "custom_components" / "upr_faces" / "engine")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    demo = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "hass_demo.py"),
            *("--port", str(free_port()), "--language", "fr"),
            *("--models", str(test_pack), "--faces", str(faces_dir), "--config", str(config_dir)),
        ],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "demo.log").open("wb"),
        env=env,
        start_new_session=True,
    )
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 300
        while b"UPR Faces demo on" not in demo.stdout.readline():
            log = (tmp_path / "demo.log").read_text(errors="replace")[-3000:]
            assert demo.poll() is None, f"the demo ended before it was up: {log}"
            assert time.monotonic() < deadline, "the demo did not come up"
        assert _running(config_dir)  # its Home Assistant
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(90) == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _running(config_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running(config_dir) == []  # nothing left without a parent

    storage = config_dir / ".storage"
    registry = json.loads((storage / "core.entity_registry").read_text(encoding="utf-8"))
    known = {entity["entity_id"] for entity in registry["data"]["entities"]}
    (saved,) = storage.glob("lovelace.*upr*")
    views = json.loads(saved.read_text(encoding="utf-8"))["data"]["config"]["views"]
    shown = []
    for card in views[0]["cards"]:
        shown += [card["entity"]] if "entity" in card else list(card.get("entities", []))
    assert len(shown) == 6  # the camera and five hub sensors
    assert set(shown) <= known, set(shown) - known
    assert "sensor.upr_faces_active_streams" not in known  # French names: other ids
