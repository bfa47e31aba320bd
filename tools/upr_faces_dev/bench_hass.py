"""``scripts/bench_hass``: what UPR Faces costs Home Assistant's own process.

Starts a real Home Assistant (``scripts/hass_demo.py``'s helpers), sets UPR Faces up on a
local gallery with N file cameras playing a 720p clip of faces, lets it warm up, then reads
from /proc, over the measuring window, the CPU and memory of Home Assistant's process and,
separately, of every process it started (the embedded engine, when there is one), and how
many cameras Home Assistant shows streaming. Prints one JSON line per run.

``--compare REF`` measures the integration of git revision REF (``git archive``; e.g. the
last release that ran the engine inside Home Assistant) and this checkout's, alternately
(``--rounds`` each), in the same run: the baseline and the change on the same machine
state. Both run with the same Python environment (``.venv``: Home Assistant and the
engine's packages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == pid:
            found.append(int(entry))
    return found


async def _streaming(base_url: str, token: str) -> int:
    """How many cameras Home Assistant shows streaming (their stream sensors on)."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{base_url}/api/states", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        states = await response.json()
    return sum(
        1
        for state in states
        if state["entity_id"].startswith("binary_sensor.")
        and state["entity_id"].endswith("_stream")
        and state["state"] == "on"
    )


async def _run(
    models: Path,
    faces: Path,
    cameras: int,
    seconds: float,
    warmup: float,
    integration: Path | None = None,
) -> dict[str, Any]:
    import hass_demo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gallery, clip = hass_demo.build_demo_media(faces, work / "media")
        config = work / "config"
        port = hass_demo.free_port()
        hass_demo.write_config(config, port, "en", integration, media=work / "media")
        hass = hass_demo.start_hass(config, port)
        try:
            await hass_demo.wait_until_up(hass)
            login = await hass_demo.onboard(hass.base_url, "en")
            await hass_demo.keep_http_config(hass, login.token, "en")
            entry_id = await hass_demo.setup_folder_entry(
                hass.base_url, login.token, gallery, models
            )
            for index in range(cameras):
                copy = clip.with_name(f"camera{index + 1}.mp4")  # one source per camera
                copy.write_bytes(clip.read_bytes())
                await hass_demo.add_camera(
                    hass.base_url, login.token, entry_id, f"Camera {index + 1}", f"file://{copy}"
                )
            await asyncio.sleep(warmup)
            pid = hass.process.pid
            others = _children(pid)
            cpu0 = {p: _cpu_seconds(p) for p in [pid, *others]}
            wall0 = time.monotonic()
            await asyncio.sleep(seconds)
            wall = time.monotonic() - wall0
            cpu1 = {p: _cpu_seconds(p) for p in cpu0}
            hass_cpu = (cpu1[pid] - cpu0[pid]) / wall * 100
            child_cpu = sum(cpu1[p] - cpu0[p] for p in others) / wall * 100
            return {
                "cameras": cameras,
                "seconds": round(wall, 1),
                "hass_cpu_percent": round(hass_cpu, 1),
                "hass_rss_mib": round(_rss_mib(pid), 1),
                "children": len(others),
                "children_cpu_percent": round(child_cpu, 1),
                "children_rss_mib": round(sum(_rss_mib(p) for p in others), 1),
                "streaming": await _streaming(hass.base_url, login.token),
            }
        finally:
            hass.stop()


def _archive(ref: str, folder: Path) -> Path:
    """The integration folder of git revision ``ref``, unpacked into ``folder``."""
    import subprocess

    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "custom_components/upr_faces"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "custom_components" / "upr_faces"


def main() -> int:
    """Measure and print one JSON line per run."""
    parser = argparse.ArgumentParser(prog="bench_hass")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--compare", metavar="REF", help="also measure git revision REF")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.compare:
            runs.insert(0, (args.compare, _archive(args.compare, Path(tmp))))
        for _round in range(args.rounds):
            for label, integration in runs:
                result = asyncio.run(
                    _run(
                        args.models,
                        args.faces,
                        args.cameras,
                        args.seconds,
                        args.warmup,
                        integration,
                    )
                )
                print(json.dumps({"integration": label, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
