"""The pipeline through Ray Serve: N file cameras, 1 and 2 replicas of each deployment.

    python -m upr_faces_dev.bench_ray --streams 4 --seconds 15 [--address HOST:PORT]

Without ``--address`` it starts a local cluster of two nodes (one CPU each) on this machine
and stops it at the end (:class:`LocalRayCluster`, which the Ray tests use too). Each row
deploys an application of its own (``bench_r1``, ``bench_r2``) and runs the cameras (the
clip of ``bench_pipeline``: the first photo of each person, 2 s each, 1 s gaps) through
one :class:`~upr_faces_engine.ray_serve.RayAnalyzer`; it prints one JSON line per row with
the analysed fps per camera, dropped samples, the engine process's CPU and the
face-to-match latency p50/p95 (as ``bench.run_pipeline_bench`` measures them).
Needs the engine's ``ray`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .clips import build_clip

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRayCluster:
    """Two ``ray start`` nodes on 127.0.0.1 (1 CPU, a 100 MB object store each), each in a
    process group of its own: :meth:`stop` kills exactly these processes, never another
    Ray of the machine (``ray stop`` would)."""

    def __init__(self, root: Path, cpus: int = 1) -> None:
        self.root = root
        self.cpus = cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.groups: list[int] = []
        self.log = root / "ray_start.log"
        self._ray = Path(sys.executable).with_name("ray")

    def _start_node(self, *args: str, workers: int) -> None:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        command = [
            str(self._ray),
            "start",
            *args,
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus}",
            "--object-store-memory=100000000",
            f"--temp-dir={self.root / 'ray'}",
            # two nodes on one machine: worker ports that cannot collide
            f"--min-worker-port={workers}",
            f"--max-worker-port={workers + 99}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=log, env=env, start_new_session=True
            )
            self.groups.append(process.pid)  # every process of the node is in its group
            if process.wait(120) != 0:
                raise RuntimeError(f"ray start failed: {self.log.read_text()[-3000:]}")

    def start(self) -> None:
        """Start the head, then the second node."""
        workers = random.randrange(20000, 40000, 200)
        self._start_node(
            "--head",
            f"--port={self.port}",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            workers=workers,
        )
        self._start_node(f"--address={self.address}", workers=workers + 100)

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of every live process of the cluster's nodes."""
        found: list[tuple[int, str]] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) not in self.groups:
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if command:
                found.append((int(entry.name), command.strip()))
        return found

    def kill_replica(self, app: str, deployment: str) -> int:
        """SIGKILL one replica process of a deployment (a crash); its pid."""
        for pid, command in self.processes():
            if command.startswith(f"ray::ServeReplica:{app}:{deployment}"):
                os.kill(pid, signal.SIGKILL)
                return pid
        raise LookupError(f"no replica of {app}:{deployment}")

    def stop(self) -> None:
        """Kill both nodes' process groups and wait until none of their processes is left."""
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while self.processes() and time.monotonic() < deadline:
            for pid, _command in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if self.processes():
            raise RuntimeError(f"Ray processes left: {self.processes()}")


def deploy(
    address: str, pack: Path, *, replicas: int, cpus: float, app: str = "upr_faces"
) -> dict[str, Any]:
    """``python -m upr_faces_engine.ray_serve deploy`` in a process of its own (the caller
    never becomes a Ray driver); what the replicas describe."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "upr_faces_engine.ray_serve",
            "deploy",
            f"--address={address}",
            f"--pack={pack}",
            f"--replicas={replicas}",
            f"--cpus={cpus}",
            f"--app={app}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"deploy failed: {done.stderr[-3000:]}")
    described: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return described


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ray_row(
    address: str,
    models: Path,
    streams: int,
    clip: Path,
    gallery_dir: Path,
    *,
    app: str,
    replicas: int,
    cpus: float,
    seconds: float = 15.0,
    warmup: float = 4.0,
    detection_fps: float = 5.0,
) -> dict[str, Any]:
    """One row: ``streams`` file cameras through a RayAnalyzer on ``app``."""
    from upr_faces_engine.alerts import MatchEvent
    from upr_faces_engine.analyzer import Analyzer
    from upr_faces_engine.gallery import load_folder
    from upr_faces_engine.models import find_pack
    from upr_faces_engine.pipeline import Pipeline, PipelineConfig
    from upr_faces_engine.ray_serve import RayAnalyzer, RayServeOptions
    from upr_faces_engine.sources import CameraSource

    deploy(address, models, replicas=replicas, cpus=cpus, app=app)
    local = Analyzer(find_pack(models), square=False)
    analyzer = RayAnalyzer(
        local,
        address,
        RayServeOptions(
            app_name=app, detect_replicas=replicas, embed_replicas=replicas, num_cpus=cpus
        ),
    )
    analyzer.start()
    if not analyzer.wait_ready(120):
        analyzer.close()
        raise RuntimeError(f"Ray Serve at {address} did not answer: {analyzer.info()}")
    gallery, _report = load_folder(gallery_dir, analyzer)
    pipeline = Pipeline(
        analyzer, gallery, PipelineConfig(detection_fps=detection_fps, cooldown_s=0.0)
    )
    latencies: list[float] = []
    lock = threading.Lock()

    def on_event(event: MatchEvent) -> None:
        with lock:
            latencies.append(event.latency_s)

    pipeline.add_listener(on_event)
    for index in range(streams):
        pipeline.add_camera(f"cam{index}", CameraSource(f"file://{clip}", name=f"cam{index}"))
    pipeline.start()
    time.sleep(warmup)
    with lock:
        latencies.clear()
    before = {w.camera: w.stats() for w in pipeline.cameras}
    remote0 = analyzer.stats.frames_remote
    cpu0, wall0 = _cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = _cpu_seconds(), time.monotonic()
    after = {w.camera: w.stats() for w in pipeline.cameras}
    info = analyzer.info()
    pipeline.stop()
    analyzer.close()
    wall = wall1 - wall0
    analysed = [(after[c].frames_analysed - before[c].frames_analysed) / wall for c in after]
    dropped = sum(after[c].dropped - before[c].dropped for c in after)
    with lock:
        lat = sorted(latencies)
    return {
        "mode": f"ray, {replicas} replica(s) per deployment",
        "streams": streams,
        "seconds": round(wall, 1),
        "target_fps": detection_fps,
        "analysed_fps_per_stream": round(float(np.mean(analysed)), 2),
        "analysed_fps_min": round(float(np.min(analysed)), 2),
        "dropped_samples": dropped,
        "frames_on_ray_per_s": round((info["frames_remote"] - remote0) / wall, 1),
        "frames_in_process": info["frames_local"],
        "engine_cpu_percent": round((cpu1 - cpu0) / wall * 100.0, 1),
        "events": len(lat),
        "latency_s": {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 3) if lat else None,
        },
        "backend": info["backend"],
    }


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


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per row (1 and 2 replicas)."""
    parser = argparse.ArgumentParser(prog="python -m upr_faces_dev.bench_ray")
    parser.add_argument("--address", help="a running cluster (default: start a local one)")
    parser.add_argument("--models", type=Path, default=SHARED / "models" / "test_pack")
    parser.add_argument("--faces", type=Path, default=SHARED / "faces")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--fps", type=float, default=5.0, help="analysed frames/s per camera")
    parser.add_argument("--cpus", type=float, default=0.25, help="CPUs per replica")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="upr-bench-ray-"))
    cluster: LocalRayCluster | None = None
    try:
        clip, gallery = _prepare(args.faces, work)
        address = args.address
        if address is None:
            cluster = LocalRayCluster(work)
            cluster.start()
            address = cluster.address
        for replicas in args.replicas:
            row = run_ray_row(
                address,
                args.models,
                args.streams,
                clip,
                gallery,
                app=f"bench_r{replicas}",
                replicas=replicas,
                cpus=args.cpus,
                seconds=args.seconds,
                detection_fps=args.fps,
            )
            print(json.dumps(row), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
