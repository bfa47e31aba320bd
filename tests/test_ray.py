"""Face analysis on Ray Serve: a real local cluster of two nodes, real engines against it.

The cluster (module fixture) is two ``ray start`` nodes of one CPU each on this machine,
each in a process group of its own, with the analyzer deployed on it (two replicas of each
deployment). The test process never joins the cluster itself (a Ray driver ends its process
a minute after the cluster goes away): the engines and :class:`RayAnalyzer` talk to it
through their bridge process, the deployment through ``python -m
upr_faces_engine.ray_serve deploy``. The cluster is stopped by killing its two process
groups (this test's own processes, never every Ray process of the machine).

Skipped, saying why, where Ray is not installed (``pip install upr-faces-engine[ray]``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_socket

pytest.importorskip(
    "ray.serve", reason="Ray Serve is not installed: pip install 'upr-faces-engine[ray]'"
)

from upr_faces_dev.bench_ray import LocalRayCluster, deploy
from upr_faces_engine.analyzer import Analyzer, read_image
from upr_faces_engine.models import find_pack
from upr_faces_engine.ray_serve import RayAnalyzer, RayServeOptions

from .conftest import TEST_PACK, LabelledPhoto, make_gallery
from .service.conftest import alerts_of, camera, folder_config
from .service.engine_process import EngineClient, EngineProcess
from .streams import make_clip

APP = "upr_faces"
CLIP_SIZE = (640, 360)  # small clips: eight cameras decode on two shared cores
CLIP_FPS = 10
# persons whose first photo matches the others of the gallery with the test pack (B's
# best is under the match threshold); each engine shows each of its persons on one camera
ENGINE_PERSONS = (
    ("deepface_A", "deepface_C", "deepface_D", "deepface_E"),
    ("deepface_C", "deepface_D", "deepface_E", "deepface_F"),
)


class RayCluster(LocalRayCluster):
    """The bench's local cluster, with the analyzer's application name."""

    def kill_replica(self, app: str = APP, deployment: str = "detect") -> int:
        """SIGKILL one replica process of a deployment (a crash); its pid."""
        return super().kill_replica(app, deployment)


def _deploy(address: str) -> dict[str, Any]:
    return deploy(address, TEST_PACK, replicas=2, cpus=0.4, app=APP)


@pytest.fixture(scope="module")
def cluster(test_pack: Path) -> Iterator[RayCluster]:
    """A two-node cluster with the analyzer deployed (2 replicas of each deployment)."""
    root = Path(tempfile.mkdtemp(prefix="upr-ray-"))  # short: Ray's socket paths
    pytest_socket.enable_socket()  # free ports are looked for before any test enables them
    try:
        ray_cluster = RayCluster(root)
        ray_cluster.start()
    finally:
        pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        described = _deploy(ray_cluster.address)
        assert described["deployed"] is True
        assert _deploy(ray_cluster.address)["deployed"] is False  # idempotent
        yield ray_cluster
    finally:
        ray_cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    # no bridge outlives its engine or analyzer
    deadline = time.monotonic() + 10
    while _bridges(ray_cluster.address) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _bridges(ray_cluster.address) == []


def _bridges(address: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"upr_faces_engine.ray_serve\0bridge" in command and address.encode() in command:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _sockets(socket_enabled: None) -> None:
    """The cluster, the bridges and the engines talk on 127.0.0.1."""


@pytest.fixture(scope="module")
def ray_gallery(
    labelled_photos: list[LabelledPhoto], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Persons A to F, every photo but the first (which the cameras show)."""
    return make_gallery(tmp_path_factory.mktemp("ray_gallery"), labelled_photos)


@pytest.fixture(scope="module")
def clips(
    labelled_photos: list[LabelledPhoto], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, int], Path]:
    """A clip per (person, lead): ``lead`` faceless stretches of 1.5 s, then the person's
    first photo for 2 s (faces arrive one camera after the other, while replicas die)."""
    folder = tmp_path_factory.mktemp("ray_clips")
    blank = folder / "blank.png"
    cv2.imwrite(str(blank), np.full((360, 640, 3), 110, dtype=np.uint8))
    firsts: dict[str, Path] = {}
    for photo in labelled_photos:
        firsts.setdefault(photo.identity, photo.path)
    made: dict[tuple[str, int], Path] = {}
    persons = {person for persons in ENGINE_PERSONS for person in persons}
    for person in sorted(persons):
        for lead in range(1, 5):
            path = folder / f"{person}_{lead}.mp4"
            make_clip(
                path,
                [blank] * lead + [firsts[person]],
                seconds=1.5,
                fps=CLIP_FPS,
                size=CLIP_SIZE,
                gap=0.3,
            )
            made[(person, lead)] = path
    return made


def _engine(tmp_path: Path, name: str, address: str) -> EngineProcess:
    return EngineProcess(tmp_path / name, extra=("--ray", address, "--ray-cpus", "0.4"))


def _config(gallery: Path, clips: dict[tuple[str, int], Path], persons: tuple[str, ...]) -> Any:
    cameras = [
        camera(f"cam{index}", clips[(person, index + 1)]) for index, person in enumerate(persons)
    ]
    return folder_config(gallery, *cameras, detection_fps=3)


async def _wait(probe: Any, what: str, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(0.25)


async def _backend(api: EngineClient, wanted: str) -> bool:
    return bool((await api.info()).get("analysis_backend") == wanted)


def _matched(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((a["camera_id"], a["person_id"]) for a in alerts if a.get("tier") == "match")


def _expected(persons: tuple[str, ...]) -> list[tuple[str, str]]:
    return sorted((f"cam{index}", person) for index, person in enumerate(persons))


# ----------------------------------------------------------------------------- tests


def test_ray_analyzer_gives_what_the_local_analyzer_gives(
    cluster: RayCluster, faces_dir: Path
) -> None:
    """Detections, embeddings and whole analyses of real photos through the cluster equal
    the in-process analyzer's (within float tolerance); the backend says where they ran."""
    local = Analyzer(find_pack(TEST_PACK), det_size=640, square=False)
    remote = RayAnalyzer(local, cluster.address, RayServeOptions(num_cpus=0.4))
    assert remote.backend == "local-fallback"  # not started yet
    remote.start()
    try:
        assert remote.wait_ready(60), remote.info()
        images = [read_image(path) for path in sorted(faces_dir.glob("*.jpg"))]
        images.append(np.full((720, 1280, 3), 90, dtype=np.uint8))  # no face
        found = remote.detect_batch(images)
        expected = local.detect_batch(images)
        assert sum(len(dets) for dets in expected) >= len(images) - 1
        for got, want in zip(found, expected, strict=True):
            assert len(got) == len(want)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_allclose(a.box, b.box, atol=0.5)
                np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)
                assert abs(a.score - b.score) < 1e-4
        vectors = remote.embed_batch(list(zip(images, expected, strict=True)))
        wanted = local.embed_batch(list(zip(images, expected, strict=True)))
        for got_rows, want_rows in zip(vectors, wanted, strict=True):
            assert got_rows.shape == want_rows.shape
            np.testing.assert_allclose(got_rows, want_rows, atol=1e-4)
        faces = remote.analyze(images[0])
        assert [f.score for f in faces] == pytest.approx(
            [f.score for f in local.analyze(images[0])]
        )
        assert remote.detect(images[-1]) == []
        info = remote.info()
        assert info["backend"] == "ray"
        assert info["frames_remote"] == len(images) + 2
        assert info["frames_local"] == 0
        assert info["replicas"]["photo_key"] == local.photo_key
    finally:
        remote.close()
    assert remote.backend == "local-fallback"


def test_a_replica_killed_under_calls_is_retried(cluster: RayCluster, faces_dir: Path) -> None:
    """Calls from several threads keep both detection replicas busy; one is killed: the
    calls it had are retried on the other (or its replacement) and every result is right."""
    local = Analyzer(find_pack(TEST_PACK), det_size=640, square=False)
    remote = RayAnalyzer(local, cluster.address, RayServeOptions(num_cpus=0.4))
    images = [read_image(path) for path in sorted(faces_dir.glob("deepface_*.jpg"))[:4]]
    expected = [len(dets) for dets in local.detect_batch(images)]
    wrong: list[list[int]] = []
    stop = threading.Event()

    def calls() -> None:
        while not stop.is_set():
            got = [len(dets) for dets in remote.detect_batch(images)]
            if got != expected:
                wrong.append(got)

    remote.start()
    try:
        assert remote.wait_ready(60), remote.info()
        threads = [threading.Thread(target=calls) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        cluster.kill_replica(deployment="detect")
        time.sleep(4.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        info = remote.info()
    finally:
        stop.set()
        remote.close()
    assert wrong == []
    assert info["backend"] == "ray"
    assert info["retries"] >= 1, info  # the killed replica's calls went again
    assert info["frames_local"] == 4 * info["calls_failed"], info


async def test_two_engines_on_one_cluster_lose_no_match_when_replicas_die(
    cluster: RayCluster, ray_gallery: Path, clips: dict[tuple[str, int], Path], tmp_path: Path
) -> None:
    """Two engines with four clip cameras each analyse on the cluster; a detection replica
    and a recognition replica are killed while faces pass: every expected match arrives on
    each engine, once, and the engines stayed on Ray."""
    engines = [_engine(tmp_path, f"engine{n}", cluster.address) for n in range(2)]
    try:
        for engine in engines:
            engine.start()
        async with EngineClient(engines[0]) as api0, EngineClient(engines[1]) as api1:
            apis = (api0, api1)
            for api in apis:  # the models (and the bridge) load with a first configuration
                await api.put_config(folder_config(ray_gallery, detection_fps=3))
            for api in apis:
                await _wait(lambda api=api: _backend(api, "ray"), "the engine on Ray", 60)
            for api, persons in zip(apis, ENGINE_PERSONS, strict=True):
                await api.put_config(_config(ray_gallery, clips, persons))
            # the first faces show after 1.5 s: a detection replica dies as they come
            await asyncio.sleep(1.0)
            cluster.kill_replica(deployment="detect")

            async def first_match() -> bool:
                return any([_matched(await alerts_of(api)) for api in apis])

            await _wait(first_match, "a first match", 60)
            cluster.kill_replica(deployment="embed")  # while the later cameras' faces are embedded

            async def all_matches() -> bool:
                counts = [len(_matched(await alerts_of(api))) for api in apis]
                wanted = [len(persons) for persons in ENGINE_PERSONS]
                return all(count >= want for count, want in zip(counts, wanted, strict=True))

            await _wait(all_matches, "every expected match", 90)
            await asyncio.sleep(4)  # the clips loop: nothing more may come
            for api, persons in zip(apis, ENGINE_PERSONS, strict=True):
                assert _matched(await alerts_of(api)) == _expected(persons)
                info = await api.info()
                assert info["analysis_backend"] == "ray"
    finally:
        for engine in engines:
            if engine.running:
                engine.stop()
    for engine in engines:
        assert "Traceback" not in engine.log_text(), engine.log_text()[-3000:]


async def test_the_cluster_going_away_falls_back_in_process_without_losing_a_match(
    cluster: RayCluster, ray_gallery: Path, clips: dict[tuple[str, int], Path], tmp_path: Path
) -> None:
    """The cluster stops while the cameras' faces are on their way: the engine says it
    analyses in-process (logged once) and every expected match still arrives, once. A new
    cluster at the same address is found again (logged once), the engine deploys the
    application on it itself, and a camera added then is analysed there."""
    engine = _engine(tmp_path, "engine", cluster.address)
    persons = ENGINE_PERSONS[0][:2]
    again_root = Path(tempfile.mkdtemp(prefix="upr-ray-"))  # short: Ray's socket paths
    again = RayCluster(again_root)
    again.port, again.address = cluster.port, cluster.address
    try:
        engine.start()
        async with EngineClient(engine) as api:
            await api.put_config(folder_config(ray_gallery, detection_fps=3))
            await _wait(lambda: _backend(api, "ray"), "the engine on Ray", 60)
            await api.put_config(_config(ray_gallery, clips, persons))
            await asyncio.sleep(1.0)
            cluster.stop()  # the last test of the module: this cluster is gone for good
            await _wait(lambda: _backend(api, "local-fallback"), "the fallback", 30)
            await _wait(lambda: _count_at_least(api, len(persons)), "every expected match", 60)
            await asyncio.sleep(2)
            assert _matched(await alerts_of(api)) == _expected(persons)
            assert (await api.info())["analysis_backend"] == "local-fallback"

            await asyncio.to_thread(again.start)
            await _wait(lambda: _backend(api, "ray"), "the engine on the new cluster", 90)
            more = (*persons, ENGINE_PERSONS[0][2])
            await api.put_config(_config(ray_gallery, clips, more))
            await _wait(lambda: _count_at_least(api, len(more)), "the new camera's match", 60)
            await asyncio.sleep(2)
            assert _matched(await alerts_of(api)) == _expected(more)
            assert (await api.info())["analysis_backend"] == "ray"
    finally:
        if engine.running:
            engine.stop()
        again.stop()
        shutil.rmtree(again_root, ignore_errors=True)
    log = engine.log_text()
    assert log.count("cannot be used") == 1, log[-3000:]
    assert log.count("analysed on Ray Serve at") == 2, log[-3000:]  # first, and again


async def _count_at_least(api: EngineClient, count: int) -> bool:
    return len(_matched(await alerts_of(api))) >= count
