"""The ``upr-faces`` command: analyse photos, match them, manage model packs, benchmark.

Heavy modules (numpy, ONNX Runtime, OpenCV) are imported inside the commands, so that
``bench`` can pin BLAS to one thread before numpy loads and ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def _progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _round(values: Any, digits: int = 2) -> list[Any]:
    return [round(float(v), digits) for v in values]


def _analyzer(args: argparse.Namespace, *, square: bool = True) -> Any:
    from .analyzer import Analyzer
    from .models import find_pack

    return Analyzer(
        find_pack(Path(args.models)),
        det_size=args.det_size,
        threads=args.threads,
        providers=tuple(args.providers.split(",")),
        square=square,
    )


def cmd_analyze(args: argparse.Namespace) -> int:
    """One JSON line per image: its faces with boxes, landmarks and embeddings."""
    from .analyzer import read_image
    from .errors import ImageError

    analyzer = _analyzer(args)
    status = EXIT_OK
    for name in args.images:
        try:
            image = read_image(Path(name))
        except ImageError as err:
            _emit({"image": name, "error": str(err)})
            status = EXIT_FAILED
            continue
        faces = analyzer.analyze(image)
        _emit(
            {
                "image": name,
                "faces": [
                    {
                        "box": _round(face.box),
                        "score": round(face.score, 4),
                        "landmarks": [_round(point) for point in face.landmarks],
                        "embedding": _round(face.embedding, 6),
                    }
                    for face in faces
                ],
            }
        )
    return status


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "upr_faces"


def load_gallery(path: Path, analyzer: Any, cache_dir: Path | None) -> Any:
    """A gallery from a photo folder or from a synced registry cache."""
    from .gallery import CACHE_FILE, GALLERY_FILE, EmbeddingCache, Gallery, load_folder

    if (path / GALLERY_FILE).is_file():
        gallery = Gallery.load(path / GALLERY_FILE)
        if gallery.model_id != analyzer.model_id:
            raise ValueError(
                f"gallery {path} was built with {gallery.model_id}, "
                f"not with this pack's recognizer {analyzer.model_id}"
            )
        return gallery
    cache = EmbeddingCache((cache_dir or _default_cache_dir()) / CACHE_FILE)
    try:
        gallery, report = load_folder(path, analyzer, cache)
    finally:
        cache.close()
    for warning in report.warnings:
        _progress(f"gallery: {warning}")
    _progress(f"gallery: {json.dumps(report.as_dict())}")
    return gallery


def cmd_match(args: argparse.Namespace) -> int:
    """Per image, each face with its best candidates in the gallery."""
    import numpy as np

    from .analyzer import read_image
    from .errors import ImageError
    from .gallery import Thresholds

    analyzer = _analyzer(args)
    try:
        gallery = load_gallery(Path(args.gallery), analyzer, args.cache)
    except (FileNotFoundError, ValueError) as err:
        _progress(f"upr-faces: {err}")
        return EXIT_FAILED
    thresholds = Thresholds(match=args.match, probable=args.probable)
    status = EXIT_OK
    for name in args.images:
        try:
            image = read_image(Path(name))
        except ImageError as err:
            _emit({"image": name, "error": str(err)})
            status = EXIT_FAILED
            continue
        faces = analyzer.analyze(image)
        results = (
            gallery.search(
                np.stack([f.embedding for f in faces]),
                top_k=args.top_k,
                thresholds=thresholds,
            )
            if faces
            else []
        )
        _emit(
            {
                "image": name,
                "faces": [
                    {
                        "box": _round(face.box),
                        "score": round(face.score, 4),
                        "candidates": [
                            {
                                "person_id": c.person_id,
                                "similarity": round(c.similarity, 4),
                                "tier": c.tier,
                            }
                            for c in found
                        ],
                    }
                    for face, found in zip(faces, results, strict=True)
                ],
            }
        )
    return status


def cmd_gallery_sync(args: argparse.Namespace) -> int:
    """Sync a registry's gallery into a cache folder (key from ``UPR_API_KEY``)."""
    import asyncio

    from .sync import sync_gallery_cli

    key = os.environ.get("UPR_API_KEY", "")
    if not key:
        _progress("upr-faces: set the registry's API key in the UPR_API_KEY variable")
        return EXIT_USAGE
    try:
        report = asyncio.run(
            sync_gallery_cli(args.api_url, Path(args.models), Path(args.cache), key, _progress)
        )
    except ValueError as err:
        _progress(f"upr-faces: {err}")
        return EXIT_FAILED
    _emit(
        {
            "persons": report["persons"],
            "references": report["references"],
            "skipped": report["skipped"],
        }
    )
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    """Print engine timings, or with ``--streams`` pipeline figures, as JSON."""
    try:  # beside the engine in the repository, not a dependency of it
        bench: Any = importlib.import_module("upr_faces_dev.bench")
    except ImportError:
        _progress(
            "upr-faces: bench needs the development tools beside the engine: "
            "pip install ./tools from a clone of the repository"
        )
        return 2

    if args.streams:
        if not args.clip or not args.gallery:
            _progress("upr-faces: bench --streams needs --clip and --gallery")
            return EXIT_USAGE
        run = bench.run_service_bench if args.service else bench.run_pipeline_bench
        _emit(
            run(
                Path(args.models),
                args.streams,
                Path(args.clip),
                Path(args.gallery),
                seconds=args.seconds,
                detection_fps=args.fps,
                progress=_progress,
            )
        )
        return EXIT_OK
    _emit(
        bench.run_engine_bench(
            Path(args.models), args.images, repeat=args.repeat, progress=_progress
        )
    )
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Watch cameras and print match events and periodic stats as JSON lines."""
    import threading
    import time

    from .alerts import MatchEvent
    from .pipeline import Pipeline, PipelineConfig
    from .sources import CameraSource, mask_url

    analyzer = _analyzer(args, square=False)
    try:
        gallery = load_gallery(Path(args.gallery), analyzer, args.cache)
    except (FileNotFoundError, ValueError) as err:
        _progress(f"upr-faces: {err}")
        return EXIT_FAILED
    config = PipelineConfig(detection_fps=args.fps, cooldown_s=args.cooldown)
    pipeline = Pipeline(analyzer, gallery, config)
    lock = threading.Lock()

    def on_event(event: MatchEvent) -> None:
        with lock:
            _emit(
                {
                    "type": event.tier,
                    "camera": event.camera,
                    "person_id": event.person_id,
                    "similarity": event.similarity,
                    "track_id": event.track_id,
                    "latency_s": event.latency_s,
                }
            )

    pipeline.add_listener(on_event)
    sources: dict[str, CameraSource] = {}
    for text in args.sources:
        source = CameraSource(text, retry_backoff=args.retry_backoff)
        sources[mask_url(text)] = source
        pipeline.add_camera(mask_url(text), source)
    pipeline.start()
    started = time.monotonic()
    try:
        while args.duration is None or time.monotonic() - started < args.duration:
            remaining = (
                args.stats_every
                if args.duration is None
                else min(args.stats_every, args.duration - (time.monotonic() - started))
            )
            time.sleep(max(0.0, remaining))
            with lock:
                for worker in pipeline.cameras:
                    stats = worker.stats()
                    _emit(
                        {
                            "type": "stats",
                            "camera": worker.camera,
                            "state": str(stats.state),
                            "frames_read": sources[worker.camera].stats.frames_read,
                            "frames_analysed": stats.frames_analysed,
                            "gated": stats.gated,
                            "dropped": stats.dropped,
                            "detect_ms": stats.detect_ms,
                            "faces": stats.faces,
                        }
                    )
    finally:
        pipeline.stop()
    return EXIT_OK


def cmd_models_fetch(args: argparse.Namespace) -> int:
    """Download, verify and unpack a model pack."""
    from .models import fetch_pack

    last = [-1]

    def progress(done: int, total: int | None) -> None:
        step = done * 20 // total if total else done // (5 << 20)
        if step != last[0]:
            last[0] = step
            size = f"{done / 1e6:.1f} MB" + (f" / {total / 1e6:.1f} MB" if total else "")
            _progress(f"download: {size}")

    pack = fetch_pack(args.pack, Path(args.dir), url=args.url, progress=progress)
    _emit({"pack": str(pack.folder), "identity": pack.identity})
    return EXIT_OK


def cmd_models_verify(args: argparse.Namespace) -> int:
    """Check a pack folder and print what it holds."""
    from .models import verify_pack

    report = verify_pack(Path(args.dir))
    sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    return EXIT_OK if report.ok else EXIT_FAILED


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="model pack folder")
    parser.add_argument("--det-size", type=int, default=640, help="detector input (640, 320)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument(
        "--providers", default="cpu", help="execution providers: cpu, cuda, openvino (a,b)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``upr-faces``."""
    parser = argparse.ArgumentParser(
        prog="upr-faces", description="Face recognition engine of the upr_faces integration"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="detect and embed the faces of images")
    _add_model_args(analyze)
    analyze.add_argument("images", nargs="+", metavar="IMAGE")
    analyze.set_defaults(func=cmd_analyze)

    match = sub.add_parser("match", help="match the faces of images against a gallery")
    _add_model_args(match)
    match.add_argument(
        "--gallery", required=True, help="photo folder <dir>/<person_id>/*.jpg or a synced cache"
    )
    match.add_argument("--cache", type=Path, default=None, help="embedding cache folder")
    match.add_argument("--top-k", type=int, default=3)
    match.add_argument("--match", type=float, default=0.55, help="match threshold")
    match.add_argument("--probable", type=float, default=0.45, help="probable threshold")
    match.add_argument("images", nargs="+", metavar="IMAGE")
    match.set_defaults(func=cmd_match)

    models = sub.add_parser("models", help="download or check model packs")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="download an official pack (or a pack URL)")
    fetch.add_argument("pack", help="buffalo_l, buffalo_m, buffalo_s, buffalo_sc or a .zip URL")
    fetch.add_argument("--dir", required=True, help="folder that receives <pack>/")
    fetch.add_argument("--url", default=None, help="download from this address instead")
    fetch.set_defaults(func=cmd_models_fetch)
    verify = models_sub.add_parser("verify", help="check a pack folder")
    verify.add_argument("dir")
    verify.set_defaults(func=cmd_models_verify)

    gallery = sub.add_parser("gallery", help="registry galleries")
    gallery_sub = gallery.add_subparsers(dest="gallery_command", required=True)
    sync = gallery_sub.add_parser("sync", help="sync the registry's gallery (key: UPR_API_KEY)")
    sync.add_argument("--api-url", required=True, help="the UPR API URL, e.g. https://host/api")
    sync.add_argument("--models", required=True, help="model pack folder")
    sync.add_argument("--cache", required=True, help="folder that keeps gallery.npz")
    sync.set_defaults(func=cmd_gallery_sync)

    bench = sub.add_parser("bench", help="time detection, embedding and gallery search")
    bench.add_argument("--models", required=True, help="model pack folder")
    bench.add_argument("--repeat", type=int, default=30)
    bench.add_argument("images", nargs="*", metavar="IMAGE", help="photos to time (optional)")
    bench.add_argument("--streams", type=int, default=0, help="pipeline bench: N file cameras")
    bench.add_argument(
        "--service",
        action="store_true",
        help="pipeline bench through a real upr-faces serve process (with --streams)",
    )
    bench.add_argument("--clip", help="pipeline bench: the clip every camera plays")
    bench.add_argument("--gallery", help="pipeline bench: the gallery folder")
    bench.add_argument("--seconds", type=float, default=20.0, help="pipeline bench: duration")
    bench.add_argument("--fps", type=float, default=5.0, help="pipeline bench: detections/s")
    bench.set_defaults(func=cmd_bench)

    watch = sub.add_parser("watch", help="watch cameras, print matches and stats as JSON")
    _add_model_args(watch)
    watch.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="usb:N, rtsp://, http://, file://"
    )
    watch.add_argument("--gallery", required=True, help="photo folder or synced cache")
    watch.add_argument("--cache", type=Path, default=None, help="embedding cache folder")
    watch.add_argument("--duration", type=float, default=None, help="seconds, then exit 0")
    watch.add_argument("--fps", type=float, default=5.0, help="detections per second per camera")
    watch.add_argument("--cooldown", type=float, default=60.0, help="seconds between alerts")
    watch.add_argument("--stats-every", type=float, default=5.0, help="seconds between stats")
    watch.add_argument("--retry-backoff", type=float, default=5.0, help="first reconnect wait")
    watch.set_defaults(func=cmd_watch)

    serve = sub.add_parser("serve", help="run the engine as a service (HTTP API v1)")
    from .server.main import add_arguments

    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``upr-faces serve`` until SIGTERM."""
    from .server.main import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``upr-faces`` console script."""
    args = build_parser().parse_args(argv)
    quiet = logging.INFO if args.command == "serve" else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "bench":
        # One core for every measurement: ONNX Runtime is given 1 thread, BLAS too.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    from .errors import UprFacesError

    try:
        result: int = args.func(args)
    except UprFacesError as err:
        _progress(f"upr-faces: {err}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
