"""``scripts/bench_pipeline``: the pipeline benchmark over several stream counts.

Builds a clip from labelled photos (the first photo of each person, 2 s each, 1 s gaps),
a gallery from their other photos, and a still clip; then runs ``upr-faces bench
--streams N`` in a fresh process for each N and for one idle camera, in the bench's own
process and through a real ``upr-faces serve`` (``--service``), and prints a table each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .bench import still_clip
from .clips import build_clip


def _prepare(faces: Path, work: Path) -> tuple[Path, Path]:
    firsts: dict[str, Path] = {}
    gallery = work / "gallery"
    for photo in sorted(faces.glob("deepface_*")):
        identity = "_".join(photo.name.split("_")[:2])
        if identity not in firsts:
            firsts[identity] = photo
            continue
        (gallery / identity).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, gallery / identity)
    clip = work / "faces.mp4"
    build_clip(clip, list(firsts.values()), seconds_per_photo=2.0, gap=1.0)
    return clip, gallery


def _run(
    models: Path, clip: Path, gallery: Path, streams: int, seconds: float, service: bool
) -> dict[str, Any]:
    command = [sys.executable, "-m", "upr_faces_engine", "bench"]
    command += ["--models", str(models), "--streams", str(streams), "--clip", str(clip)]
    command += ["--gallery", str(gallery), "--seconds", str(seconds)]
    command += ["--service"] if service else []
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _row(label: str, r: dict[str, Any], first: dict[str, Any]) -> str:
    added = r["streams"] - first["streams"]
    per_added = (
        round((r["rss_mib"] - first["rss_mib"]) / added, 1)
        if added > 0 and not label.endswith("(still scene)")
        else r["rss_mib_per_stream"]
    )
    latency = r["latency_s"]
    lat = f"{latency['p50']} / {latency['p95']}" if latency["p50"] is not None else "-"
    return (
        f"| {label} | {r['cpu_percent_per_stream']} | {r['rss_mib']} | "
        f"{per_added} | {r['read_fps_per_stream']} | "
        f"{r['analysed_fps_per_stream']} (+{r['gated_fps_per_stream']}) | {lat} | "
        f"{r['dropped_samples']} |"
    )


def main() -> int:
    """Run the benchmark and print JSON lines and a Markdown table per mode."""
    parser = argparse.ArgumentParser(prog="bench_pipeline")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["in-process", "service"],
        default=["in-process", "service"],
        help="the pipeline in the bench's own process, and/or through upr-faces serve",
    )
    args = parser.parse_args()
    tables: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip, gallery = _prepare(args.faces, work)
        still = still_clip(work / "still.mp4")
        for streams in args.streams:  # the modes alternate, so that drift affects both alike
            for mode in args.modes:
                result = _run(args.models, clip, gallery, streams, args.seconds, mode == "service")
                print(json.dumps({"mode": mode, **result}), flush=True)
                tables.setdefault(mode, []).append((f"{streams} with faces", result))
        for mode in args.modes:
            idle = _run(args.models, still, gallery, 1, args.seconds, mode == "service")
            print(json.dumps({"mode": mode, **idle}), flush=True)
            tables[mode].append(("1 idle (still scene)", idle))
    for mode, rows in tables.items():
        print(f"\n{mode}:\n")
        print(
            "| streams | CPU % per stream | RSS MiB | RSS MiB per added stream | read fps | "
            "analysed fps (+ gated) | latency p50 / p95 s | dropped |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, r in rows:
            print(_row(label, r, rows[0][1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
