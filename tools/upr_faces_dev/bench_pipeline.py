"""``scripts/bench_pipeline``: the pipeline benchmark over several stream counts.

Builds a clip from labelled photos (the first photo of each person, 2 s each, 1 s gaps),
a gallery from their other photos, and a still clip; then runs ``upr-faces bench
--streams N`` in a fresh process for each N and for one idle camera, and prints a table.
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


def _run(models: Path, clip: Path, gallery: Path, streams: int, seconds: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "upr_faces_engine", "bench"]
    command += ["--models", str(models), "--streams", str(streams), "--clip", str(clip)]
    command += ["--gallery", str(gallery), "--seconds", str(seconds)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    """Run the benchmark and print JSON lines and a Markdown table."""
    parser = argparse.ArgumentParser(prog="bench_pipeline")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip, gallery = _prepare(args.faces, work)
        for streams in args.streams:
            result = _run(args.models, clip, gallery, streams, args.seconds)
            print(json.dumps(result), flush=True)
            rows.append((f"{streams} with faces", result))
        idle = _run(args.models, still_clip(work / "still.mp4"), gallery, 1, args.seconds)
        print(json.dumps(idle), flush=True)
        rows.append(("1 idle (still scene)", idle))
    print()
    print(
        "| streams | CPU % per stream | RSS MiB | RSS MiB per added stream | read fps | "
        "analysed fps (+ gated) | latency p50 / p95 s | dropped |"
    )
    print("|---|---|---|---|---|---|---|---|")
    first = rows[0][1]
    for label, r in rows:
        added = r["streams"] - first["streams"]
        per_added = (
            round((r["rss_mib"] - first["rss_mib"]) / added, 1)
            if added > 0 and not label.endswith("(still scene)")
            else r["rss_mib_per_stream"]
        )
        latency = r["latency_s"]
        lat = f"{latency['p50']} / {latency['p95']}" if latency["p50"] is not None else "-"
        print(
            f"| {label} | {r['cpu_percent_per_stream']} | {r['rss_mib']} | "
            f"{per_added} | {r['read_fps_per_stream']} | "
            f"{r['analysed_fps_per_stream']} (+{r['gated_fps_per_stream']}) | {lat} | "
            f"{r['dropped_samples']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
