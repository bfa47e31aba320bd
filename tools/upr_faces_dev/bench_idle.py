"""Idle cameras: what decoding key frames only saves, and what waking up costs.

``python -m upr_faces_dev.bench_idle [--cameras 8] [--seconds 10] [--wakes 10]``

Builds a 720p 15 fps clip of a still scene under sensor noise (``still_scene_clip``, about
4 Mbit/s: the weight of a real camera's stream) for each key-frame interval (GOP, by
default 15 and 30 frames), then, in this one process:

* opens ``--cameras`` ``file://`` cameras of it and measures the CPU per camera (process
  CPU time over wall time, divided by the cameras) with full decoding (the baseline, no
  ``set_still``), then with the scene called still (``idle_decode="keyframes"``); nobody
  converts a frame to pixels, so this is the reading and decoding alone;
* measures the wake-up latency of one camera (``SourceStats.wake_latency``: from
  ``set_still(False)`` to the first fully decoded frame), over ``--wakes`` wakes at a
  random moment of the GOP (an outside trigger: waits for the next key frame) and as many
  right after a key frame was delivered (as the pipeline's motion gate does: at once).

Prints two Markdown tables. The machine is shared: compare rows of one run.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from upr_faces_engine.sources import CameraSource, SourceState

from .clips import still_scene_clip

_FPS = 15


def _clip(folder: Path, gop: int, size: tuple[int, int], grain: float) -> Path:
    """Four GOPs of a still scene under sensor noise (the clip loops on a key frame)."""
    path = folder / f"gop{gop}.mp4"
    return still_scene_clip(path, seconds=4 * gop / _FPS, fps=_FPS, size=size, gop=gop, grain=grain)


def _cpu_row(clip: Path, cameras: int, seconds: float, still: bool) -> dict[str, float]:
    """CPU per camera (fraction of a core), decoded and skipped pictures a second each."""
    sources = [CameraSource(f"file://{clip}", name=f"cam{index}") for index in range(cameras)]
    for source in sources:
        source.start()
    try:
        for source in sources:
            if source.wait_newer(0, timeout=20) is None:
                raise RuntimeError(f"{source}: no frame")
            source.set_still(still)
        time.sleep(2.5)  # into the still spell (up to one GOP to the next key frame)
        before = [source.stats for source in sources]
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        after = [source.stats for source in sources]
        if any(source.state is not SourceState.STREAMING for source in sources):
            raise RuntimeError("a camera stopped streaming during the run")
    finally:
        for source in sources:
            source.stop()
    decoded = sum(b.decoded - a.decoded for a, b in zip(before, after, strict=True))
    skipped = sum(b.skipped - a.skipped for a, b in zip(before, after, strict=True))
    return {
        "cpu": cpu / wall / cameras,
        "decoded": decoded / wall / cameras,
        "skipped": skipped / wall / cameras,
    }


def _wake_latencies(clip: Path, gop: int, wakes: int, on_key: bool) -> list[float]:
    """Seconds from set_still(False) to the first fully decoded frame, ``wakes`` times."""
    source = CameraSource(f"file://{clip}")
    source.start()
    rng = random.Random(gop)
    latencies: list[float] = []
    try:
        frame = source.wait_newer(0, timeout=20)
        if frame is None:
            raise RuntimeError(f"{source}: no frame")
        for _ in range(wakes):
            source.set_still(True)
            while not source.stats.skipping:
                time.sleep(0.01)
            frame = source.latest() or frame
            newer = source.wait_newer(frame.seq, timeout=gop / _FPS * 3)  # a key frame
            if newer is None:
                raise RuntimeError(f"{source}: no key frame while still")
            if not on_key:
                time.sleep(rng.uniform(0.0, gop / _FPS))
            previous = source.stats.wake_latency
            source.set_still(False)
            deadline = time.monotonic() + gop / _FPS * 3
            while source.stats.wake_latency == previous:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{source}: did not wake")
                time.sleep(0.002)
            latency = source.stats.wake_latency
            assert latency is not None
            latencies.append(latency)
            frame = source.latest() or frame
            time.sleep(0.3)  # a few full frames before the next still spell
    finally:
        source.stop()
    return latencies


def _ms(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(np.asarray(values), q) * 1000:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(
        prog="bench_idle", description="Idle cameras: CPU and wake-up latency."
    )
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per CPU row")
    parser.add_argument("--wakes", type=int, default=10, help="per GOP and wake moment")
    parser.add_argument("--gops", default="15,30", help="key-frame intervals, in frames")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--grain", type=float, default=6.0, help="sensor noise (grey levels)")
    args = parser.parse_args(argv)
    gops = [int(text) for text in args.gops.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_idle_") as folder:
        clips = {
            gop: _clip(Path(folder), gop, (args.width, args.height), args.grain) for gop in gops
        }
        rates = ", ".join(
            f"GOP {gop}: {path.stat().st_size * 8 / (4 * gop / _FPS) / 1e6:.1f} Mbit/s"
            for gop, path in clips.items()
        )
        print(
            f"{args.cameras} file:// cameras, {args.width}x{args.height} {_FPS} fps H.264 "
            f"({rates}), {args.seconds:g} s a row; "
            "CPU = process CPU time / wall time / cameras\n"
        )
        print(
            "| GOP (frames) | decoding | CPU per camera (% of a core) | vs full "
            "| decoded/s per camera | skipped/s per camera |"
        )
        print("|---|---|---|---|---|---|")
        for gop in gops:
            full = _cpu_row(clips[gop], args.cameras, args.seconds, still=False)
            idle = _cpu_row(clips[gop], args.cameras, args.seconds, still=True)
            for label, row in (("full (baseline)", full), ("key frames (still)", idle)):
                print(
                    f"| {gop} | {label} | {row['cpu'] * 100:.1f} | "
                    f"{row['cpu'] / full['cpu']:.2f} | {row['decoded']:.2f} | "
                    f"{row['skipped']:.2f} |",
                    flush=True,
                )
        print(
            "\n| GOP (frames) | set_still(False) comes | wakes | wake-up p50 (ms) "
            "| p95 (ms) | max (ms) | GOP (ms) |"
        )
        print("|---|---|---|---|---|---|---|")
        for gop in gops:
            for on_key, label in ((False, "at a random moment"), (True, "right after a key frame")):
                latencies = _wake_latencies(clips[gop], gop, args.wakes, on_key)
                print(
                    f"| {gop} | {label} | {len(latencies)} | {_ms(latencies, 50)} | "
                    f"{_ms(latencies, 95)} | {max(latencies) * 1000:.0f} | "
                    f"{gop * 1000 / _FPS:.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
