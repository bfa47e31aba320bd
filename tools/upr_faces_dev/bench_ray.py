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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .clips import bench_media

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
    """One row: ``streams`` file cameras through a RayAnalyzer on ``app``, measured as
    :func:`bench.run_pipeline_bench` measures the in-process rows."""
    from upr_faces_engine.analyzer import Analyzer
    from upr_faces_engine.models import find_pack
    from upr_faces_engine.ray_serve import RayAnalyzer, RayServeOptions

    from .bench import run_pipeline_bench

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
    try:
        if not analyzer.wait_ready(120):
            raise RuntimeError(f"Ray Serve at {address} did not answer: {analyzer.info()}")
        row = run_pipeline_bench(
            models,
            streams,
            clip,
            gallery_dir,
            seconds=seconds,
            warmup=warmup,
            detection_fps=detection_fps,
            workers=None,
            analyzer=analyzer,
        )
        info = analyzer.info()
    finally:
        analyzer.close()
    return {
        "mode": f"ray, {replicas} replica(s) per deployment",
        **row,
        "frames_on_ray": info["frames_remote"],  # warm-up included
        "frames_in_process": info["frames_local"],
        "backend": info["backend"],
    }


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
        clip, gallery = bench_media(args.faces, work)
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
