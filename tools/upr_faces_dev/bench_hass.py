"""``scripts/bench_hass``: what UPR Faces costs Home Assistant's own process.

Starts a real Home Assistant (``scripts/hass_demo.py``'s helpers), sets UPR Faces up on a
local gallery with N file cameras playing a 720p clip of faces, lets it warm up, then reads
from /proc, over the measuring window, the CPU and memory of Home Assistant's process and,
separately, of every process it started (the embedded engine, when there is one). Prints
one JSON line.
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


async def _run(
    models: Path, faces: Path, cameras: int, seconds: float, warmup: float
) -> dict[str, Any]:
    import hass_demo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gallery, clip = hass_demo.build_demo_media(faces, work / "media")
        config = work / "config"
        port = hass_demo.free_port()
        hass_demo.write_config(config, port, "en")
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
            }
        finally:
            hass.stop()


def main() -> int:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(prog="bench_hass")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    args = parser.parse_args()
    result = asyncio.run(_run(args.models, args.faces, args.cameras, args.seconds, args.warmup))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
