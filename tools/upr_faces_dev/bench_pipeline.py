"""``scripts/bench_pipeline``: the pipeline benchmark over several camera counts and modes.

Builds a clip from labelled photos (the first photo of each person, 2 s each, 1 s gaps),
a gallery from their other photos, and a still clip; then, for each camera count and each
mode, runs one row in a fresh process (``python -m upr_faces_dev.bench_pipeline --row``),
the modes alternating so that drift affects them alike, plus one idle camera per mode.
Prints one JSON line per row and one Markdown table at the end.

The modes (:data:`MODES`):

- ``baseline``: the naive way, every frame of every camera through InsightFace's own
  detection and recognition classes (``bench.run_baseline_bench``); the other rows are
  compared with it.
- ``in-process``: the pipeline in the bench's own process, 1 worker and 1 ONNX thread.
- ``in-process-all``: the same with the engine's defaults, every core.
- ``service``: through a real ``upr-faces serve`` (the engine's defaults).

A mode is one entry of :data:`MODES`: a name, a line of help and a function from
:class:`RowArgs` to the row's figures (the keys ``bench.run_pipeline_bench`` returns).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench import still_clip
from .clips import bench_media

TARGET_FPS = 5.0  # analysed frames per second and camera the pipeline aims at


@dataclass(frozen=True, slots=True)
class RowArgs:
    """What one row of the table is run with."""

    models: Path
    clip: Path
    gallery: Path
    streams: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Mode:
    """One way of running the cameras: a row per camera count."""

    help: str
    run: Callable[[RowArgs], dict[str, Any]]


def _baseline(row: RowArgs) -> dict[str, Any]:
    from .bench import run_baseline_bench

    return run_baseline_bench(row.models, row.streams, row.clip, row.gallery, seconds=row.seconds)


def _in_process(workers: int | None, threads: int | None) -> Callable[[RowArgs], dict[str, Any]]:
    def run(row: RowArgs) -> dict[str, Any]:
        from .bench import run_pipeline_bench

        return run_pipeline_bench(
            row.models,
            row.streams,
            row.clip,
            row.gallery,
            seconds=row.seconds,
            detection_fps=TARGET_FPS,
            workers=workers,
            threads=threads,
        )

    return run


def _service(row: RowArgs) -> dict[str, Any]:
    from .bench import run_service_bench

    return run_service_bench(
        row.models,
        row.streams,
        row.clip,
        row.gallery,
        seconds=row.seconds,
        detection_fps=TARGET_FPS,
    )


MODES: dict[str, Mode] = {
    "baseline": Mode("every frame through InsightFace's SCRFD and ArcFaceONNX", _baseline),
    "in-process": Mode("the pipeline in this process, 1 worker, 1 thread", _in_process(1, 1)),
    "in-process-all": Mode(
        "the pipeline in this process, the engine's defaults: every core",
        _in_process(None, None),
    ),
    "service": Mode("through a real upr-faces serve process", _service),
}
DEFAULT_MODES = ("baseline", "in-process", "in-process-all")


def _run(mode: str, row: RowArgs) -> dict[str, Any]:
    """One row in a fresh process, so that no row inherits another's memory or threads."""
    command = [sys.executable, "-m", "upr_faces_dev.bench_pipeline", "--row", mode]
    command += ["--models", str(row.models), "--clip", str(row.clip)]
    command += ["--gallery", str(row.gallery), "--streams", str(row.streams)]
    command += ["--seconds", str(row.seconds)]
    # as `upr-faces bench` does: BLAS on one thread (ONNX Runtime's threads are the mode's)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env["MKL_NUM_THREADS"] = "1"
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table(rows: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """The Markdown table of ``(mode, label, figures)`` rows.

    MiB per added camera: the row's memory less that of the mode's first row, per camera
    added. The ratio to the baseline is the share of its target each camera reaches
    (``analysed fps / target``, at most 1) over the baseline's share with as many cameras.
    """
    firsts: dict[str, dict[str, Any]] = {}
    shares: dict[int, float] = {}
    for mode, label, r in rows:
        if not label.endswith("idle"):
            firsts.setdefault(mode, r)
            if mode == "baseline":
                shares[r["streams"]] = _share(r)
    lines = [
        "| mode | cameras | analysed fps per camera (target) | dropped | CPU % per camera | "
        "MiB per added camera | latency p50 / p95 s | × baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, label, r in rows:
        first = firsts.get(mode, r)
        added = r["streams"] - first["streams"]
        if added > 0 and not label.endswith("idle"):
            per_added: Any = round((r["rss_mib"] - first["rss_mib"]) / added, 1)
        else:
            per_added = r["rss_mib_per_stream"]
        latency = r["latency_s"]
        lat = f"{latency['p50']} / {latency['p95']}" if latency["p50"] is not None else "-"
        base = shares.get(r["streams"])
        ratio = "-"
        if base and not label.endswith("idle"):
            ratio = "1.0" if mode == "baseline" else f"{_share(r) / base:.1f}"
        target = r.get("target_fps") or TARGET_FPS
        behind = r.get("cameras_behind")
        dropped = f"{r['dropped_samples']}" + (f" ({behind} behind)" if behind else "")
        lines.append(
            f"| {mode} | {label} | {r['analysed_fps_per_stream']} ({_cell(target)}) | {dropped} | "
            f"{r['cpu_percent_per_stream']} | {per_added} | {lat} | {ratio} |"
        )
    return lines


def _share(r: dict[str, Any]) -> float:
    target = float(r.get("target_fps") or TARGET_FPS)
    return min(1.0, float(r["analysed_fps_per_stream"]) / target) if target > 0 else 0.0


def _row_main(args: argparse.Namespace) -> int:
    row = RowArgs(args.models, args.clip, args.gallery, args.streams[0], args.seconds)
    result = MODES[args.row].run(row)
    print(json.dumps({"mode": args.row, **result}), flush=True)
    return 0


def main() -> int:
    """Run the benchmark and print JSON lines and a Markdown table."""
    parser = argparse.ArgumentParser(prog="bench_pipeline")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--faces", type=Path, help="labelled photos (not with --row)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=sorted(MODES),
        default=list(DEFAULT_MODES),
        help="; ".join(f"{name}: {mode.help}" for name, mode in MODES.items()),
    )
    parser.add_argument("--no-idle", action="store_true", help="leave out the idle rows")
    parser.add_argument("--row", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gallery", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        return _row_main(args)
    if args.faces is None:
        parser.error("--faces is required")
    rows: list[tuple[str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip, gallery = bench_media(args.faces, work)
        still = still_clip(work / "still.mp4")
        for streams in args.streams:  # the modes alternate, so that drift affects all alike
            for mode in args.modes:
                result = _run(mode, RowArgs(args.models, clip, gallery, streams, args.seconds))
                print(json.dumps({"mode": mode, **result}), flush=True)
                rows.append((mode, f"{streams}", result))
        if not args.no_idle:
            for mode in args.modes:
                idle = _run(mode, RowArgs(args.models, still, gallery, 1, args.seconds))
                print(json.dumps({"mode": mode, **idle}), flush=True)
                rows.append((mode, "1 idle", idle))
    order = {mode: index for index, mode in enumerate(args.modes)}
    rows.sort(key=lambda item: (order[item[0]], item[1].endswith("idle")))
    print()
    print("\n".join(table(rows)))
    print(
        f"\n{args.seconds:g} s per row after a warm-up; every camera plays its own copy of a "
        f"720p 15 fps clip; the pipeline's target: {TARGET_FPS:g} analysed fps per camera, "
        "the baseline's: every frame read"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
