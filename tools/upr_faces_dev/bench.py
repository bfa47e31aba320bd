"""Engine benchmark: detection, embedding and gallery search timings on one core."""

from __future__ import annotations

import os
import platform
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from upr_faces_engine.analyzer import PROVIDERS, Analyzer, gpu_providers, read_image
from upr_faces_engine.gallery import Gallery, Person
from upr_faces_engine.models import find_pack


def _percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
    }


def _time_ms(func: Callable[[], object], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def rss_mib() -> float:
    """Resident memory of this process in MiB (current, from /proc when available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_gallery(references: int, dim: int, per_person: int = 4) -> Gallery:
    """A gallery of random unit vectors, ``per_person`` references per person."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((references, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    count = (references + per_person - 1) // per_person
    persons = {f"p{i}": Person(f"p{i}", f"REF-{i}") for i in range(count)}
    refs = ((f"p{i // per_person}", vectors[i]) for i in range(references))
    return Gallery(persons, refs, model_id="synthetic", embedding_size=dim)


def run_engine_bench(
    models: Path,
    images: Sequence[str] = (),
    *,
    repeat: int = 30,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Time the engine on one thread; returns a JSON-ready dict of figures."""
    pack = find_pack(models)
    rss_start = rss_mib()
    analyzer = Analyzer(pack, threads=1)
    small = Analyzer(pack, threads=1, det_size=320)
    rss_loaded = rss_mib()
    if images:
        frames = [read_image(Path(name)) for name in images]
    else:
        rng = np.random.default_rng(1)
        frames = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)]
    result: dict[str, Any] = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "threads": 1,
        "models": str(models),
        "embedding_size": analyzer.embedding_size,
    }
    progress("bench: detection")
    for label, engine in (("detect_640", analyzer), ("detect_320", small)):
        samples: list[float] = []
        for frame in frames:
            samples += _time_ms(partial(engine.detect, frame), repeat)
        result[f"{label}_ms"] = _percentiles(samples)
    progress("bench: embedding")
    faces = [(frame, det) for frame in frames for det in analyzer.detect(frame)]
    if faces:
        frame, det = faces[0]
        one = _time_ms(lambda: analyzer.embed(frame, [det]), repeat)
        batch = [d for f, d in faces if f is frame][:8] or [det]
        many = _time_ms(lambda: analyzer.embed(frame, batch), max(5, repeat // 3))
        result["embed_ms_per_face"] = {
            "single": _percentiles(one)["p50"],
            f"batch_of_{len(batch)}": round(float(np.median(many)) / len(batch), 2),
        }
    else:
        result["embed_ms_per_face"] = None
    progress("bench: gallery search")
    search: dict[str, Any] = {}
    for size in (1_000, 10_000, 100_000):
        gallery = synthetic_gallery(size, 512)
        rng = np.random.default_rng(2)
        probe = rng.standard_normal((1, 512), dtype=np.float32)
        probe4 = rng.standard_normal((4, 512), dtype=np.float32)
        search[f"{size}"] = {
            "1_face": _percentiles(_time_ms(partial(gallery.search, probe), repeat)),
            "4_faces": _percentiles(_time_ms(partial(gallery.search, probe4), repeat)),
        }
        del gallery
    result["search_ms_512d"] = search
    result["rss_mib"] = {"start": round(rss_start, 1), "after_loading": round(rss_loaded, 1)}
    result["gpu"] = _gpu_rows(pack, frames, repeat, progress)
    return result


def _gpu_rows(
    pack: Any, frames: Sequence[Any], repeat: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The same detection and embedding timings on the GPU execution providers (CUDA,
    TensorRT first where installed), measured in the same run as the CPU rows; or why
    there are none (an onnxruntime without them: the CPU package)."""
    available = ort.get_available_providers()
    wanted = [PROVIDERS["tensorrt"], PROVIDERS["cuda"]]
    if not any(name in available for name in wanted):
        return {
            "providers": None,
            "reason": "this onnxruntime has no CUDA or TensorRT execution provider "
            "(install requirements-gpu.txt on a machine with an NVIDIA GPU)",
            "available": list(available),
        }
    providers = gpu_providers()
    progress(f"bench: GPU ({', '.join(providers)})")
    rows: dict[str, Any] = {"providers": list(providers)}
    for label, det_size in (("detect_640", 640), ("detect_320", 320)):
        engine = Analyzer(pack, threads=1, det_size=det_size, providers=providers)
        engine.detect(frames[0])  # the first run builds the GPU kernels (and TensorRT engines)
        samples: list[float] = []
        for frame in frames:
            samples += _time_ms(partial(engine.detect, frame), repeat)
        rows[f"{label}_ms"] = _percentiles(samples)
        rows["active_providers"] = list(engine.providers)
    faces = [(frame, det) for frame in frames for det in engine.detect(frame)]
    if faces:
        frame, det = faces[0]
        rows["embed_ms_per_face"] = _percentiles(
            _time_ms(lambda: engine.embed(frame, [det]), repeat)
        )["p50"]
    return rows


def still_clip(path: Path, seconds: float = 4.0, fps: int = 15) -> Path:
    """A 720p H.264 clip of one unchanging picture: a camera watching an empty corridor."""
    import av

    rng = np.random.default_rng(3)
    picture = np.clip(rng.normal(110, 25, (720, 1280, 3)).astype(np.int16), 0, 255).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"tune": "zerolatency", "g": str(fps)}
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        for index in range(int(seconds * fps)):
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_pipeline_bench(
    models: Path,
    streams: int,
    clip: Path,
    gallery_dir: Path,
    *,
    seconds: float = 20.0,
    warmup: float = 4.0,
    detection_fps: float = 5.0,
    progress: Callable[[str], None] = lambda _msg: None,
    workers: int | None = 1,
    threads: int | None = 1,
    analyzer: Any = None,
) -> dict[str, Any]:
    """Run ``streams`` file cameras playing ``clip`` in real time through the pipeline.

    Every camera decodes its own copy of the stream (as N RTSP cameras would); one analyzer
    is shared. ``workers`` (pipeline threads) and ``threads`` (ONNX Runtime intra-op
    threads): 1 and 1 by default, one core; None for the engine's defaults, every core.
    ``analyzer``: one already built (a Ray Serve one, say) instead of in-process sessions.
    Returns CPU per stream, RSS, analysed fps, latency, dropped samples and whether the
    pipeline said it was behind.
    """
    from upr_faces_engine.alerts import MatchEvent
    from upr_faces_engine.gallery import EmbeddingCache, load_folder
    from upr_faces_engine.pipeline import Pipeline, PipelineConfig
    from upr_faces_engine.sources import CameraSource

    if analyzer is None:
        analyzer = Analyzer(find_pack(models), threads=threads, square=False)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = EmbeddingCache(Path(cache_dir) / "cache.sqlite3")
        gallery, _report = load_folder(gallery_dir, analyzer, cache)
        cache.close()
    rss_base = rss_mib()
    pipeline = Pipeline(
        analyzer,
        gallery,
        PipelineConfig(detection_fps=detection_fps, cooldown_s=0.0),
        workers=workers,
    )
    latencies: list[float] = []
    lock = threading.Lock()

    def on_event(event: MatchEvent) -> None:
        with lock:
            latencies.append(event.latency_s)

    pipeline.add_listener(on_event)
    sources = {f"cam{i}": CameraSource(f"file://{clip}", name=f"cam{i}") for i in range(streams)}
    for name, source in sources.items():
        pipeline.add_camera(name, source)
    pipeline.start()
    progress(f"bench: {streams} stream(s), warming up")
    time.sleep(warmup)
    with lock:
        latencies.clear()
    start_stats = {w.camera: w.stats() for w in pipeline.cameras}
    start_read = {name: source.stats.frames_read for name, source in sources.items()}
    cpu0, wall0 = _cpu_seconds(), time.monotonic()
    progress(f"bench: measuring for {seconds:.0f} s")
    time.sleep(seconds)
    cpu1, wall1 = _cpu_seconds(), time.monotonic()
    rss_run = rss_mib()
    end_stats = {w.camera: w.stats() for w in pipeline.cameras}
    end_read = {name: source.stats.frames_read for name, source in sources.items()}
    scheduler = pipeline.stats()
    pipeline.stop()
    wall = wall1 - wall0
    analysed = [
        (end_stats[c].frames_analysed - start_stats[c].frames_analysed) / wall for c in end_stats
    ]
    gated = [(end_stats[c].gated - start_stats[c].gated) / wall for c in end_stats]
    dropped = sum(end_stats[c].dropped - start_stats[c].dropped for c in end_stats)
    read_fps = [(end_read[c] - start_read[c]) / wall for c in end_read]
    cpu_percent = (cpu1 - cpu0) / wall * 100.0
    with lock:
        lat = sorted(latencies)
    return {
        "streams": streams,
        "seconds": round(wall, 1),
        "workers": pipeline.workers,
        "threads": analyzer.threads,
        "mean_batch": scheduler.mean_batch,
        "cameras_behind": scheduler.cameras_behind,
        "target_fps": detection_fps,
        "cpu_percent_total": round(cpu_percent, 1),
        "cpu_percent_per_stream": round(cpu_percent / streams, 1),
        "rss_mib": round(rss_run, 1),
        "rss_mib_models_and_gallery": round(rss_base, 1),
        "rss_mib_per_stream": round((rss_run - rss_base) / streams, 1),
        "read_fps_per_stream": round(float(np.mean(read_fps)), 2),
        "analysed_fps_per_stream": round(float(np.mean(analysed)), 2),
        "analysed_fps_min": round(float(np.min(analysed)), 2),
        "gated_fps_per_stream": round(float(np.mean(gated)), 2),
        "dropped_samples": dropped,
        "events": len(lat),
        "latency_s": {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 3) if lat else None,
        },
    }


# --------------------------------------------------------------------------- the naive baseline


def run_baseline_bench(
    models: Path,
    streams: int,
    clip: Path,
    gallery_dir: Path,
    *,
    seconds: float = 20.0,
    warmup: float = 4.0,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """The naive way, measured like :func:`run_pipeline_bench`: every frame of every camera
    through InsightFace's own SCRFD and ArcFaceONNX classes (as its ``FaceAnalysis`` does:
    detection at 640x640, every face aligned and embedded, ONNX Runtime's default session
    options), one thread per camera, no motion gate, no tracking; a face matches on the
    first frame whose similarity reaches the match tier. The target is every frame read.

    Dropped samples are the frames read that no analysis took; the latency is from the
    first frame of a run of frames with faces to its first match.
    """
    import warnings

    import onnxruntime as ort
    from insightface.app.common import Face
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD

    from upr_faces_engine.gallery import EmbeddingCache, Thresholds, load_folder
    from upr_faces_engine.sources import CameraSource

    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-image, in face_align
    pack = find_pack(models)
    with tempfile.TemporaryDirectory() as cache_dir:  # the same recognizer: same gallery
        cache = EmbeddingCache(Path(cache_dir) / "cache.sqlite3")
        gallery, _report = load_folder(gallery_dir, Analyzer(pack, threads=1), cache)
        cache.close()
    providers = ["CPUExecutionProvider"]
    detector = SCRFD(
        str(pack.detector), ort.InferenceSession(str(pack.detector), providers=providers)
    )
    detector.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    recognizer = ArcFaceONNX(
        str(pack.recognizer), ort.InferenceSession(str(pack.recognizer), providers=providers)
    )
    recognizer.prepare(-1)
    rss_base = rss_mib()
    lock = threading.Lock()
    latencies: list[float] = []
    analysed: dict[str, int] = {}
    stop = threading.Event()
    match = Thresholds().match

    def camera(name: str, source: CameraSource) -> None:
        last_seq = -1
        face_since: float | None = None
        matched = False
        while not stop.is_set():
            frame = source.latest()
            if frame is None or frame.seq == last_seq:
                time.sleep(0.002)
                continue
            last_seq = frame.seq
            boxes, landmarks = detector.detect(frame.image, input_size=(640, 640))
            vectors = []
            for index in range(boxes.shape[0]):
                face = Face(bbox=boxes[index, :4], kps=landmarks[index], det_score=boxes[index, 4])
                vectors.append(recognizer.get(frame.image, face))
            if not vectors:
                face_since, matched = None, False
            else:
                face_since = frame.captured_at if face_since is None else face_since
                probe = np.asarray(vectors, dtype=np.float32)
                probe /= np.linalg.norm(probe, axis=1, keepdims=True)
                found = gallery.search(probe, top_k=1)
                best = max((c.similarity for row in found for c in row), default=0.0)
                if best >= match and not matched:
                    matched = True
                    with lock:
                        latencies.append(time.monotonic() - face_since)
            with lock:
                analysed[name] = analysed.get(name, 0) + 1

    sources = {f"cam{i}": CameraSource(f"file://{clip}", name=f"cam{i}") for i in range(streams)}
    threads = [
        threading.Thread(target=camera, args=(name, source), daemon=True)
        for name, source in sources.items()
    ]
    for source in sources.values():
        source.start()
    for thread in threads:
        thread.start()
    progress(f"bench: baseline, {streams} stream(s), warming up")
    time.sleep(warmup)
    with lock:
        latencies.clear()
        start_analysed = dict(analysed)
    start_read = {name: source.stats.frames_read for name, source in sources.items()}
    cpu0, wall0 = _cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = _cpu_seconds(), time.monotonic()
    rss_run = rss_mib()
    with lock:
        end_analysed = dict(analysed)
        lat = sorted(latencies)
    end_read = {name: source.stats.frames_read for name, source in sources.items()}
    stop.set()
    for thread in threads:
        thread.join(10)
    for source in sources.values():
        source.stop()
    wall = wall1 - wall0
    done = {c: end_analysed.get(c, 0) - start_analysed.get(c, 0) for c in sources}
    read = {c: end_read[c] - start_read[c] for c in sources}
    cpu_percent = (cpu1 - cpu0) / wall * 100.0
    rates = [done[c] / wall for c in sources]
    read_fps = float(np.mean([read[c] / wall for c in sources]))
    return {
        "streams": streams,
        "seconds": round(wall, 1),
        "workers": streams,
        "threads": None,
        "mean_batch": 1.0,
        "cameras_behind": None,
        "target_fps": round(read_fps, 2),  # every frame
        "cpu_percent_total": round(cpu_percent, 1),
        "cpu_percent_per_stream": round(cpu_percent / streams, 1),
        "rss_mib": round(rss_run, 1),
        "rss_mib_models_and_gallery": round(rss_base, 1),
        "rss_mib_per_stream": round((rss_run - rss_base) / streams, 1),
        "read_fps_per_stream": round(read_fps, 2),
        "analysed_fps_per_stream": round(float(np.mean(rates)), 2),
        "analysed_fps_min": round(float(np.min(rates)), 2),
        "gated_fps_per_stream": 0.0,
        "dropped_samples": sum(max(0, read[c] - done[c]) for c in sources),
        "events": len(lat),
        "latency_s": {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 3) if lat else None,
        },
    }


# --------------------------------------------------------------------------- through the service


def _process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def run_service_bench(
    models: Path,
    streams: int,
    clip: Path,
    gallery_dir: Path,
    *,
    seconds: float = 20.0,
    warmup: float = 4.0,
    detection_fps: float = 5.0,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """:func:`run_pipeline_bench` through ``upr-faces serve``: a real engine process is
    configured over its API with ``streams`` file cameras; its CPU and memory are read from
    /proc, the pipeline's counters from ``/api/v1/info``, latencies from its alerts (each
    one also written to disk with its images and to the event log, as in production)."""
    import asyncio
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as data:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "upr_faces_engine", "serve", "--data", data),
                *("--port", "0", "--media", str(clip.resolve().parent)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert process.stdout is not None
            url = process.stdout.readline().decode().strip().removeprefix("listening on ")
            token = (Path(data) / "token").read_text(encoding="utf-8").strip()
            return asyncio.run(
                _measure_service(
                    process.pid,
                    url,
                    token,
                    models,
                    streams,
                    clip,
                    gallery_dir,
                    seconds=seconds,
                    warmup=warmup,
                    detection_fps=detection_fps,
                    progress=progress,
                )
            )
        finally:
            process.terminate()
            process.wait(15)
            if process.stdout is not None:
                process.stdout.close()


async def _measure_service(
    pid: int,
    url: str,
    token: str,
    models: Path,
    streams: int,
    clip: Path,
    gallery_dir: Path,
    *,
    seconds: float,
    warmup: float,
    detection_fps: float,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    import asyncio

    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    config = {
        "gallery": {"source": "folder", "folder": str(gallery_dir.resolve())},
        "models": {"pack": "custom", "folder": str(models.resolve())},
        "options": {"detection_fps": detection_fps, "cooldown": 0},
        "cameras": [
            {"id": f"cam{i}", "name": f"cam{i}", "source": f"file://{clip.resolve()}"}
            for i in range(streams)
        ],
    }
    async with aiohttp.ClientSession(base_url=url, headers=headers) as session:

        async def info() -> dict[str, Any]:
            async with session.get("/api/v1/info") as response:
                data: dict[str, Any] = await response.json()
                return data

        rss_base = _process_rss_mib(pid)
        async with session.put("/api/v1/config", json=config) as response:
            response.raise_for_status()
        progress(f"bench: {streams} stream(s) through the service, warming up")
        await asyncio.sleep(warmup)
        start = await info()
        began = time.time()
        cpu0, wall0 = _process_cpu_seconds(pid), time.monotonic()
        progress(f"bench: measuring for {seconds:.0f} s")
        await asyncio.sleep(seconds)
        cpu1, wall1 = _process_cpu_seconds(pid), time.monotonic()
        end = await info()
        rss_run = _process_rss_mib(pid)
        async with session.get(f"/api/v1/alerts?limit=5000&since={began}") as response:
            alerts = (await response.json())["alerts"]
    wall = wall1 - wall0

    def per_camera(snapshot: dict[str, Any], key: str, source: bool = False) -> dict[str, int]:
        out = {}
        for camera in snapshot["cameras"]:
            stats = camera["source_stats" if source else "stats"] or {}
            out[camera["id"]] = int(stats.get(key) or 0)
        return out

    def rate(key: str, source: bool = False) -> list[float]:
        a, b = per_camera(start, key, source), per_camera(end, key, source)
        return [(b[c] - a.get(c, 0)) / wall for c in b]

    analysed, gated = rate("frames_analysed"), rate("gated")
    read_fps = rate("frames_read", source=True)
    dropped_a, dropped_b = per_camera(start, "dropped"), per_camera(end, "dropped")
    cpu_percent = (cpu1 - cpu0) / wall * 100.0
    lat = sorted(float(alert["latency_s"]) for alert in alerts)
    return {
        "mode": "service",
        "streams": streams,
        "seconds": round(wall, 1),
        "threads": end["threads"],
        "cpu_percent_total": round(cpu_percent, 1),
        "cpu_percent_per_stream": round(cpu_percent / streams, 1),
        "rss_mib": round(rss_run, 1),
        "rss_mib_idle_engine": round(rss_base, 1),
        "rss_mib_per_stream": round((rss_run - rss_base) / streams, 1),
        "read_fps_per_stream": round(float(np.mean(read_fps)), 2),
        "analysed_fps_per_stream": round(float(np.mean(analysed)), 2),
        "analysed_fps_min": round(float(np.min(analysed)), 2),
        "gated_fps_per_stream": round(float(np.mean(gated)), 2),
        "dropped_samples": sum(dropped_b[c] - dropped_a.get(c, 0) for c in dropped_b),
        "events": len(lat),
        "latency_s": {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 3) if lat else None,
        },
    }
